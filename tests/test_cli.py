"""Console scripts on real sessions: logbert-score, logbert-evaluate, and a two-process DDP run on CPU."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from logbert.cli import evaluate_main, score_main
from logbert.config import SAMPLE_DATA_DIR

NORMAL_FILE = SAMPLE_DATA_DIR / "hdfs_test_normal_500.txt"
ABNORMAL_FILE = SAMPLE_DATA_DIR / "hdfs_test_abnormal_500.txt"


def test_score_writes_one_line_per_session(trained_model_dir, tmp_path):
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(
        json.dumps({"session_id": "a", "event_sequence": [22, 5, 5, 5, 11, 9]}) + "\n"
        + json.dumps({"session_id": "b", "event_sequence": ["22", "5", "5"], "label": 1}) + "\n"
    )
    output = tmp_path / "out" / "scores.jsonl"
    assert score_main(["--model", str(trained_model_dir), "--input", str(sessions), str(NORMAL_FILE),
                       "--output", str(output), "--return_events", "false"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 2 + 500
    assert rows[0]["session_id"] == "a" and rows[0]["record"] == 1 and rows[1]["label"] == 1
    assert all({"anomaly_score", "is_anomaly", "threshold"} <= set(row) for row in rows)


def test_score_without_masked_scores_gives_the_same_verdicts(trained_model_dir, tmp_path, capsys):
    outputs = {}
    for flags in ([], ["--no_masked_scores"]):
        output = tmp_path / f"scores{len(flags)}.jsonl"
        assert score_main(["--model", str(trained_model_dir), "--input", str(ABNORMAL_FILE), "--output",
                           str(output), "--threshold", "3.0", *flags]) == 0
        outputs[bool(flags)] = [json.loads(line) for line in output.read_text().splitlines()]
    full, fast = outputs[False], outputs[True]
    assert [r["is_anomaly"] for r in fast] == [r["is_anomaly"] for r in full] and any(r["is_anomaly"] for r in fast)
    assert [r["anomaly_score"] for r in fast] == pytest.approx([r["anomaly_score"] for r in full], abs=1e-5)
    assert all(r["mean_nll"] is None and r["events"][1]["probability"] is None for r in fast)
    assert "ANOMALY" in capsys.readouterr().out  # the alert lines still say what gave each session away


def test_score_reports_a_malformed_line_with_file_and_line(trained_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"event_sequence": [5, 22]}) + "\n{not json\n")
    assert score_main(["--model", str(trained_model_dir), "--input", str(bad),
                       "--output", str(tmp_path / "s.jsonl")]) == 2
    assert score_main(["--model", str(trained_model_dir), "--input", str(bad), "--skip_bad_records",
                       "--output", str(tmp_path / "s.jsonl")]) == 0
    rejected = [json.loads(line) for line in (tmp_path / "rejected_records.jsonl").read_text().splitlines()]
    assert rejected[0]["record"] == 2 and "not valid JSON" in rejected[0]["reason"]


def test_score_error_names_the_file_and_line(trained_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"event_sequence": [5, 22]}) + "\n{not json\n")
    score_main(["--model", str(trained_model_dir), "--input", str(bad), "--output", str(tmp_path / "s.jsonl")])
    error = capsys.readouterr().err
    assert str(bad) in error and "line 2" in error


def test_evaluate_writes_metrics_scores_and_plots(trained_model_dir, tmp_path):
    output_dir = tmp_path / "report"
    assert evaluate_main(["--model", str(trained_model_dir), "--normal", str(NORMAL_FILE),
                          "--abnormal", str(ABNORMAL_FILE), "--output_dir", str(output_dir),
                          "--projected_normal_count", "553366"]) == 0
    report = json.loads((output_dir / "metrics.json").read_text())
    for name in ("precision", "recall", "f1", "fpr", "auroc", "auprc", "threshold", "tp", "fp", "tn", "fn",
                 "projected_f1"):
        assert name in report["logbert"]
    assert report["counts"]["normal"] == 500 and report["counts"]["anomalous"] == 500
    # the baseline comes from the training files recorded with the model
    assert 0.5 < report["count_vector_baseline"]["auroc"] <= 1
    assert report["logbert"]["auroc"] > 0.6
    # the deployed detector (known-normal gate on) and the model alone, each at its own label-free threshold
    assert report["known_normal_gate"] is True
    assert report["logbert_model_only"]["threshold"] == json.loads(
        (trained_model_dir / "config.json").read_text())["model_only_threshold"]
    for plot in ("roc.png", "precision_recall.png", "score_histogram.png"):
        assert (output_dir / plot).read_bytes()[:4] == b"\x89PNG"
    assert len((output_dir / "scores.jsonl").read_text().splitlines()) == 1000

    # Without the masked rows: the same detection metrics (the score reads only left to right and the end slot).
    assert evaluate_main(["--model", str(trained_model_dir), "--normal", str(NORMAL_FILE),
                          "--abnormal", str(ABNORMAL_FILE), "--output_dir", str(tmp_path / "fast"),
                          "--projected_normal_count", "553366", "--no_masked_scores"]) == 0
    fast = json.loads((tmp_path / "fast" / "metrics.json").read_text())
    for detector in ("logbert", "logbert_model_only"):
        for name in ("tp", "fp", "tn", "fn"):
            assert fast[detector][name] == report[detector][name], (detector, name)
        assert fast[detector]["auroc"] == pytest.approx(report[detector]["auroc"], abs=1e-6)


def test_evaluate_explains_each_session_with_its_template(trained_model_dir, tmp_path, capsys, caplog):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoint-*", "best_model"))
    templates = [{"event_id": "5", "template": "Receiving block <*> src: /<*> dest: /<*>", "occurrences": 3}]
    (model / "parser_state.json").write_text(json.dumps({"format_version": 1, "templates": templates}))
    normal = tmp_path / "normal.txt"
    normal.write_text("5 5 5 5 5 5 5 5\n22 5 11 9\n")
    abnormal = tmp_path / "abnormal.txt"
    abnormal.write_text("5 5 5 5 5 5 5 5 5 5 5 5\n")
    # threshold -1: every session is flagged, so the normal ones are listed as false positives
    assert evaluate_main(["--model", str(model), "--normal", str(normal), "--abnormal", str(abnormal),
                          "--output_dir", str(tmp_path / "report"), "--threshold", "-1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "report" / "scores.jsonl").read_text().splitlines()]
    assert all("events" not in row for row in rows)
    worst = [row["most_surprising_event"] for row in rows]
    assert [w["event"] for w in (worst[0], worst[2])] == ["5", "5"]
    assert worst[0]["template"] == templates[0]["template"] and worst[1]["event"] in {"22", "5", "11", "9"}
    output = capsys.readouterr().out
    assert "Normal sessions flagged (false positives): 2" in output
    assert any("Scored 3 sessions in" in r.getMessage() and "sessions/s" in r.getMessage() for r in caplog.records)
    assert "event 5 at position" in output and templates[0]["template"] in output


def test_evaluate_needs_test_sessions(trained_model_dir, tmp_path, capsys):
    assert evaluate_main(["--model", str(trained_model_dir), "--output_dir", str(tmp_path)]) == 2
    assert "--normal" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs: DDP over gloo."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate's launcher is not on PATH")
    output_dir = tmp_path / "ddp"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "run_mlm_logs.py",
               "--config", "configs/tiny.yaml", "--output-dir", str(output_dir),
               "--data_cache_dir", str(tmp_path / "cache"), "--max_steps", "20", "--eval_steps", "10",
               "--save_steps", "10", "--disable_tqdm", "true", "--report_to", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # 20 steps of 2 processes x 32 sessions: twice the data of one process, so about 2x the epochs
    assert state["global_step"] == 20
    assert state["epoch"] == pytest.approx(20 * 64 / 4612, rel=0.1)
    assert (output_dir / "best_model" / "model.safetensors").exists()


def test_push_without_network_is_a_clear_error_not_a_traceback(trained_model_dir, capsys, monkeypatch):
    from logbert.cli import push_main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert push_main(["--model", str(trained_model_dir / "best_model"), "--repo_id", "org/logbert-test"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "HF_HUB_OFFLINE" in error and "Traceback" not in error


def test_push_refuses_a_folder_that_is_not_an_exported_model(tmp_path, capsys):
    from logbert.cli import push_main

    assert push_main(["--model", str(tmp_path), "--repo_id", "org/x"]) == 2
    assert "not an exported LogBERT model folder" in capsys.readouterr().err


def test_exported_folder_is_what_gets_pushed(trained_model_dir):
    from logbert.hub import REQUIRED_FILES

    for folder in (trained_model_dir, trained_model_dir / "best_model"):
        for name in REQUIRED_FILES + ("tokenizer_config.json", "training_config.yaml", "data_summary.json"):
            assert (folder / name).exists(), f"{folder}/{name}"
        assert not (folder / "pytorch_model.bin").exists()  # safetensors only: loading never unpickles
        config = json.loads((folder / "config.json").read_text())
        assert config["custom_pipelines"]["log-anomaly"]["impl"] == "pipeline.LogAnomalyPipeline"
        for key in ("anomaly_threshold", "num_candidates", "score_name"):
            assert key in config
        card = (folder / "README.md").read_text()
        assert "pipeline(\"log-anomaly\"" in card and "train_sessions" in card and "eval_loss" in card


def test_calibrate_sets_the_threshold_from_normal_sessions_or_a_dev_set(trained_model_dir, tmp_path):
    from logbert.cli import calibrate_main

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir / "best_model", model)
    assert calibrate_main(["--model", str(model), "--normal", str(NORMAL_FILE), "--target_fpr", "0.1"]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["threshold_target_fpr"] == 0.1 and config["calibration_sessions"] == 500
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"event_sequence": line.split(), "label": label}) + "\n"
                           for path, label in ((NORMAL_FILE, 0), (ABNORMAL_FILE, 1))
                           for line in path.read_text().splitlines()[:100]))
    assert calibrate_main(["--model", str(model), "--dev", str(dev)]) == 0
    tuned = json.loads((model / "config.json").read_text())
    assert tuned["calibration_sessions"] == 200 and tuned["threshold_target_fpr"] is None
    assert calibrate_main(["--model", str(model)]) == 2


def test_calibration_with_every_session_known_judges_new_multisets_by_the_model_threshold(caplog):
    from types import SimpleNamespace

    from logbert.calibration import calibrate

    class AllKnown:  # what the pipeline returns when the gate knows every calibration session
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def score(self, sessions, **kwargs):
            return [{"anomaly_score": 0.0, "model_score": float(i), "known_count_vector": True,
                     "score_name": "next_max_nll"} for i, _ in enumerate(sessions)]

    with caplog.at_level("WARNING", logger="logbert.calibration"):
        settings = calibrate(AllKnown(), [["5"]] * 10, target_fpr=0.1)
    assert settings["model_only_threshold"] == 8.0  # one of the ten (score 9) above it (too few for a tail fit)
    assert settings["threshold_method"] == "empirical"
    # Not 0, which would flag every session with a new multiset: the model judges those at its own threshold.
    assert settings["anomaly_threshold"] == settings["model_only_threshold"]
    assert "judged by the model at its own threshold" in caplog.text


def test_calibration_says_so_when_the_sessions_new_to_the_gate_fit_in_the_false_positive_budget(caplog):
    from types import SimpleNamespace

    from logbert.calibration import calibrate

    class FewNew:  # 1 of 20 sessions new to the gate; a target of 0.1 allows 2 above the threshold
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def score(self, sessions, **kwargs):
            return [{"anomaly_score": 7.0 if i == 3 else 0.0, "model_score": float(i), "known_count_vector": i != 3,
                     "score_name": "next_max_nll"} for i, _ in enumerate(sessions)]

    with caplog.at_level("WARNING", logger="logbert.calibration"):
        settings = calibrate(FewNew(), [["5"]] * 20, target_fpr=0.1)
    assert settings["anomaly_threshold"] == 0.0  # flagging every new multiset keeps within the target
    assert "Only 1 of 20 calibration sessions hold an event multiset new to the gate" in caplog.text
    assert "flagged on almost any score" in caplog.text


def test_the_gate_threshold_fallback_and_warnings_count_only_sessions_without_unseen_events(caplog):
    from types import SimpleNamespace

    from logbert.calibration import calibrate

    class KnownOrUnseen:  # every usable session known to the gate; two more hold an unseen event (so new to it)
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def score(self, sessions, **kwargs):
            return [{"anomaly_score": 27.6 if i < 2 else 0.0, "model_score": 27.6 if i < 2 else float(i),
                     "known_count_vector": i >= 2, "num_unseen": int(i < 2), "score_name": "next_max_nll"}
                    for i, _ in enumerate(sessions)]

    with caplog.at_level("WARNING", logger="logbert.calibration"):
        settings = calibrate(KnownOrUnseen(), [["5"]] * 12, target_fpr=0.1)
    assert settings["anomaly_threshold"] == settings["model_only_threshold"] > 0
    assert "All 10 calibration sessions repeat an event multiset" in caplog.text

    class ManyNewAtZero:  # half the sessions new to the gate, most of them scoring 0 (e.g. miss_ratio)
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def score(self, sessions, **kwargs):
            return [{"anomaly_score": 0.5 if i == 0 else 0.0, "model_score": 0.5 if i == 0 else 0.0,
                     "known_count_vector": i % 2 == 1, "score_name": "miss_ratio"} for i, _ in enumerate(sessions)]

    caplog.clear()
    with caplog.at_level("WARNING", logger="logbert.calibration"):
        settings = calibrate(ManyNewAtZero(), [["5"]] * 20, target_fpr=0.1)
    assert settings["anomaly_threshold"] == 0.0  # a real quantile: 1 of 20 above it
    assert "new to the gate" not in caplog.text


def test_calibration_leaves_out_sessions_with_unseen_events_and_refuses_a_ceiling_threshold():
    from types import SimpleNamespace

    from logbert.calibration import calibrate

    class Detector:
        model = SimpleNamespace(config=SimpleNamespace(num_candidates=5))

        def __init__(self, unseen):
            self.unseen = unseen

        def score(self, sessions, **kwargs):  # session i scores i; the unseen ones sit at the ceiling
            return [{"anomaly_score": 27.63 if i in self.unseen else float(i),
                     "model_score": 27.63 if i in self.unseen else float(i), "known_count_vector": None,
                     "num_unseen": int(i in self.unseen), "score_name": "next_max_nll"} for i, _ in enumerate(sessions)]

    settings = calibrate(Detector(unseen={0, 1}), [["5"]] * 10, target_fpr=0.1)
    assert settings["model_only_threshold"] < 27 and settings["calibration_sessions_with_unseen_events"] == 2
    with pytest.raises(ValueError, match="unseen in training"):
        calibrate(Detector(unseen=set(range(10))), [["5"]] * 10, target_fpr=0.1)


def test_a_flagged_session_is_printed_with_the_event_that_gave_it_away():
    from logbert.cli import alert_line

    record = {"file": "f.jsonl", "record": 3, "anomaly_score": 9.5, "threshold": 4.0, "end_nll": 0.1, "max_nll": 9.5,
              "events": [{"position": 0, "event": "5", "probability": 0.9, "next_probability": None, "unseen": False},
                         {"position": 1, "event": "23", "probability": 0.2, "next_probability": 0.0001,
                          "unseen": False},
                         {"position": 2, "event": "5", "probability": 0.8, "next_probability": 0.7, "unseen": False}]}
    line = alert_line(record)
    assert line.startswith("ANOMALY f.jsonl:3: score 9.500 > 4.000")
    assert "event 23 at position 1 (p=0.0001)" in line
    record["events"][2]["unseen"] = True
    assert "event 5 at position 2 (unseen in training)" in alert_line({**record, "session_id": "blk_7"})


def test_a_session_given_away_by_its_ending_says_so():
    from logbert.cli import alert_line, explained

    record = {"file": "f.jsonl", "record": 1, "anomaly_score": 6.0, "threshold": 4.0, "score_name": "next_max_nll",
              "end_nll": 6.0, "next_max_nll": 6.0, "max_nll": 0.5, "num_unseen": 0,
              "events": [{"position": 0, "event": "22", "probability": 0.9, "next_probability": None, "unseen": False},
                         {"position": 1, "event": "5", "probability": 0.8, "next_probability": 0.7, "unseen": False}]}
    assert "the session ends where it should not (end slot, p=0.0025)" in alert_line(record)
    assert explained(record)["ends_early"] is True
    assert explained({**record, "end_nll": 1.0})["ends_early"] is False  # an event scored worse than the ending


def test_logbert_lists_its_subcommands_and_each_help_exits_0(capsys):
    from logbert.commands import COMMANDS, main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("train", "score", "evaluate", "calibrate", "push"))
    for name in ("train", "score", "evaluate", "calibrate", "push", "prepare", "detect"):
        with pytest.raises(SystemExit) as raised:
            main([name, "--help"])
        assert raised.value.code == 0, name
    assert main(["scroe"]) == 2 and "did you mean `logbert score`" in capsys.readouterr().err
    assert set(COMMANDS) >= {"train", "score", "evaluate", "calibrate", "push"}


def test_a_mistyped_flag_of_a_subcommand_is_one_line(capsys):
    from logbert.cli import score_main

    assert score_main(["--model", "m", "--input", "x", "--outptu", "y"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "did you mean --output?" in error


@pytest.mark.parametrize("bad_record, reason", [
    ({"event_sequence": [5, 1.5]}, "event ID"),
    ({"event_sequence": 5}, "event_sequence"),
    ({"token_ids": "101 5 102"}, "token_ids"),
    ({"event_sequence": [5, [22]]}, "event ID"),
    ({"token_ids": [101, 5, 102]}, "trained on event IDs"),  # refused by the pipeline, not by the file reader
])
def test_scoring_rejects_what_training_rejects_and_never_loses_earlier_results(trained_model_dir, tmp_path, capsys,
                                                                               bad_record, reason):
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text("".join(json.dumps(r) + "\n" for r in ({"event_sequence": [5, 22]}, bad_record,
                                                               {"event_sequence": [5, 5, 22]})))
    output = tmp_path / "scores.jsonl"
    output.write_text("the previous results\n")
    assert score_main(["--model", str(trained_model_dir), "--input", str(sessions), "--output", str(output)]) == 2
    error = capsys.readouterr().err
    last_line = error.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "sessions.jsonl: record 2" in last_line and reason in last_line
    assert "Traceback" not in error
    assert output.read_text() == "the previous results\n"  # a failed run leaves the old file whole
    assert not list(tmp_path.glob(".scores.jsonl*"))

    assert score_main(["--model", str(trained_model_dir), "--input", str(sessions), "--output", str(output),
                       "--skip_bad_records"]) == 0
    assert [json.loads(line)["record"] for line in output.read_text().splitlines()] == [1, 3]
    quarantined = [json.loads(line) for line in (tmp_path / "rejected_records.jsonl").read_text().splitlines()]
    assert [r["record"] for r in quarantined] == [2]


@pytest.mark.parametrize("damage, message", [
    ("no_tokenizer", "missing tokenizer.json"),
    ("truncated_weights", "cannot be loaded"),
    ("empty_weights", "cannot be loaded"),
    ("no_vocab_size", "lacks vocab_size"),
    ("other_tokenizer", "comes from another run"),
])
def test_a_damaged_model_folder_is_one_line_never_wrong_scores(trained_model_dir, tmp_path, capsys, damage, message):
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoint-*", "best_model"))
    weights = model / "model.safetensors"
    if damage == "no_tokenizer":
        (model / "tokenizer.json").unlink()
    elif damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty_weights":
        weights.write_bytes(b"")
    elif damage == "no_vocab_size":
        config = json.loads((model / "config.json").read_text())
        del config["vocab_size"]
        (model / "config.json").write_text(json.dumps(config))
    else:  # a tokenizer with more events than the model has rows
        tokenizer = json.loads((model / "tokenizer.json").read_text())
        vocab = tokenizer["model"]["vocab"]
        vocab.update({f"E{i}": len(vocab) + i for i in range(200)})
        (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert score_main(["--model", str(model), "--input", str(NORMAL_FILE), "--output", str(tmp_path / "s.jsonl")]) == 2
    error = capsys.readouterr().err
    assert message in error.strip().splitlines()[-1] and "Traceback" not in error


def test_an_input_error_is_reported_before_torch_is_even_imported():
    """`logbert score` with a missing input answers at once: the heavy libraries load only for real work."""
    code = ("import sys; from logbert.commands import main; code = main(['score', '--model', 'm', '--input', "
            "'/nonexistent/sessions.jsonl']); print(code, 'torch' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               cwd=Path(__file__).parents[1], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.stdout.split() == ["2", "False"], completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: --input /nonexistent/sessions.jsonl: no such file (or no file matches the pattern)")


def test_a_loaded_detector_hands_freed_memory_back_after_every_forward_pass(trained_model_dir):
    from logbert.cli import load_detector
    from logbert.ingest.glibc_heap import release_freed_memory

    detector = load_detector(str(trained_model_dir), device="cpu")
    assert detector.after_forward is release_freed_memory
    calls = []
    detector.after_forward = lambda: calls.append(1)
    detector._cache.clear()
    results = detector(["5 22 5 11 9 26", "22 5 5 5 26 26 21"], batch_size=2, return_events=False)
    assert len(calls) >= 2 and all(r["num_events"] for r in results)  # several passes, each followed by a trim
