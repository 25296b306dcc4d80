"""Thresholds: the best-F1 search on a dev set, scoring settings written atomically, calibrating a model folder."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from logbert import calibration
from logbert.calibration import apply_scoring_config, best_f1_threshold, calibrate_model_folder


def _best_f1_by_trying_every_score(scores, labels):
    """The search best_f1_threshold replaces: F1 at `score > t` for every distinct score t, lowest t on ties."""
    def f1(threshold):
        flagged = scores > threshold
        true_positives = np.sum(flagged & (labels == 1))
        return 2 * true_positives / (flagged.sum() + labels.sum()) if true_positives else 0.0

    return float(max(np.unique(scores), key=f1))


def test_best_f1_threshold_is_strict_and_counts_ties_by_hand():
    # > 0 flags 1.0, 1.0, 2.0: 2 of 3 anomalies, F1 4/6; > 1 flags only 2.0: F1 2/4; > 2 flags nothing
    scores, labels = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 0.0]), np.array([0, 1, 1, 0, 1, 0])
    assert best_f1_threshold(scores, labels) == 0.0


def test_equal_f1_goes_to_the_lowest_threshold():
    # > 3 flags one anomaly alone (F1 2/3); > 0 flags four sessions, both anomalies among them (F1 4/6)
    scores, labels = np.array([4.0, 3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 0, 1, 0])
    assert best_f1_threshold(scores, labels) == 0.0


def test_perfect_separation_puts_the_threshold_at_the_highest_normal_score():
    assert best_f1_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.2


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_matches_trying_every_score(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        size = rng.integers(1, 40)
        scores = rng.integers(0, rng.integers(1, 8), size) / 2  # few distinct values: many ties
        labels = rng.integers(0, 2, size)
        assert best_f1_threshold(scores, labels) == _best_f1_by_trying_every_score(scores, labels)


def test_scoring_settings_replace_config_json_atomically_and_keep_it_readable(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert", "anomaly_threshold": 1.0}))
    os.chmod(config, 0o644)
    apply_scoring_config(tmp_path, {"anomaly_threshold": 2.5, "not_a_scoring_key": 1})
    written = json.loads(config.read_text())
    assert written == {"model_type": "bert", "anomaly_threshold": 2.5}
    assert config.stat().st_mode & 0o777 == 0o644 & ~_umask()  # not tempfile's 0600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]

    def interrupted(source, target):  # killed between writing the new file and renaming it into place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        apply_scoring_config(tmp_path, {"anomaly_threshold": 9.0})
    assert json.loads(config.read_text()) == written  # the old config, whole
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]  # no temporary file left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_calibrate_model_folder_stores_the_threshold_and_refreshes_the_card(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "num_candidates": 5}))

    class Detector:  # scores the n-th normal session n, as the model and with the gate
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def score(self, sessions, **kwargs):
            return [{"anomaly_score": float(i), "model_score": float(i), "known_count_vector": False,
                     "score_name": "next_max_nll"} for i, _ in enumerate(sessions)]

    loaded = []
    monkeypatch.setattr("logbert.cli.load_detector", lambda model, device=None: loaded.append((model, device))
                        or Detector())
    settings = calibrate_model_folder(tmp_path, [["5"]] * 10, target_fpr=0.1, device="cpu")
    assert loaded == [(str(tmp_path), "cpu")]
    assert settings["anomaly_threshold"] == 8.0 and settings["calibration_sessions"] == 10
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["anomaly_threshold"] == 8.0 and config["threshold_target_fpr"] == 0.1
    assert "anomaly_threshold" in (tmp_path / "README.md").read_text()


def test_calibration_sessions_leave_out_known_anomalies():
    from datasets import Dataset

    from logbert.data import EVENTS_KIND

    rows = Dataset.from_dict({"event_ids": [["5"], ["9"], ["11"], ["22"]], "input_ids": [[1], [2], [3], [4]],
                              "label": [0, 1, -1, 0]})
    assert calibration.calibration_sessions(rows, EVENTS_KIND, limit=3) == [["5"], ["11"]]
    assert calibration.calibration_sessions(rows, "token_ids", limit=4) == [{"token_ids": [1]}, {"token_ids": [3]},
                                                                            {"token_ids": [4]}]


def test_calibration_skips_the_masked_rows_when_the_score_does_not_read_them(trained_model_dir, monkeypatch):
    from logbert.cli import load_detector
    from logbert.config import SAMPLE_DATA_DIR

    detector = load_detector(str(trained_model_dir), device="cpu")
    sessions = [line.split() for line in (SAMPLE_DATA_DIR / "hdfs_test_normal_500.txt").read_text().splitlines()]
    asked = []
    original = detector._score_preprocessed
    monkeypatch.setattr(detector, "_score_preprocessed",
                        lambda prepared, **kw: asked.append(kw.get("masked_scores", True)) or original(prepared, **kw))
    verdict = calibration.calibrate(detector, sessions, 0.01)
    assert asked and not any(asked)  # next_max_nll, the default: left to right and the end slot only
    detector._cache.clear()
    full = calibration.calibrate(detector, sessions, 0.01, masked_scores=True)
    assert verdict["anomaly_threshold"] == pytest.approx(full["anomaly_threshold"], abs=1e-5)
    assert verdict["model_only_threshold"] == pytest.approx(full["model_only_threshold"], abs=1e-5)
    asked.clear()
    calibration.calibrate(detector, sessions, 0.01, score_name="mean_nll")  # reads the masked rows: computes them
    assert asked and all(asked)
