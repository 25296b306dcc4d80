"""The log-anomaly pipeline on a tiny model trained on the bundled sample: determinism, windows, reloading."""

import copy
import json
import logging
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

from logbert import LogAnomalyPipeline
from logbert.pipeline import KNOWN_COUNT_VECTORS_FILE

NORMAL = "22 5 5 5 11 9 11 9 11 9 26 26 26 23 23 23 21 21 21"


@pytest.fixture(scope="module")
def detector(trained_model_dir):
    """The model's own scores: the known-normal gate (tested on its own below) would score known sessions 0."""
    return pipeline("log-anomaly", model=str(trained_model_dir), pipeline_class=LogAnomalyPipeline, device="cpu",
                    known_normal_gate=False)


@pytest.fixture(scope="module")
def gated_detector(trained_model_dir):
    return pipeline("log-anomaly", model=str(trained_model_dir), pipeline_class=LogAnomalyPipeline, device="cpu")


def test_result_fields_and_calibrated_threshold(detector, trained_model_dir):
    result = detector(NORMAL)
    config = json.loads((trained_model_dir / "config.json").read_text())
    assert result["threshold"] == config["anomaly_threshold"]
    assert result["is_anomaly"] == (result["anomaly_score"] > result["threshold"])
    assert result["num_events"] == 19 and len(result["events"]) == 19
    first = result["events"][0]
    assert first["event"] == "22" and first["position"] == 0
    assert 0 < first["probability"] <= 1 and first["rank"] >= 1
    assert len(first["top_candidates"]) == 3
    assert all(c["event"] not in ("[PAD]", "[CLS]", "[MASK]", "[UNK]") for c in first["top_candidates"])


def test_input_forms_agree(detector):
    as_string = detector(NORMAL)["anomaly_score"]
    as_list = detector([NORMAL.split()])[0]["anomaly_score"]  # a list is a batch: one session is a list in it
    as_ints = detector([[int(e) for e in NORMAL.split()]])[0]["anomaly_score"]
    as_object = detector({"session_id": "blk_1", "event_sequence": NORMAL.split()})
    assert as_string == as_list == as_ints == as_object["anomaly_score"]
    assert as_object["session_id"] == "blk_1"


def test_a_list_is_always_a_batch_and_a_bare_event_id_in_it_is_an_error(detector):
    assert len(detector(["22", "5", "5"], return_events=False)) == 3  # three sessions of one event each
    with pytest.raises(ValueError, match="item 0 of the batch is 22"):
        detector([22, "5 5 11", "9 9"])
    with pytest.raises(ValueError, match="must be an event ID"):  # training's rule and message
        detector({"event_sequence": [5, 1.5]})
    with pytest.raises(ValueError, match="trained on event IDs"):
        detector({"token_ids": [101, 5, 102]})


def test_scores_are_deterministic_and_independent_of_batching(detector):
    others = ["22 5 5", "5 5 5 22 11 9 11 9 11 9 26 26 26", "22 5 5 5 26 26 26 11 9 11 9 11 9 2 3 23 23 23 21 21 21"]
    alone = detector(NORMAL, return_events=False)["anomaly_score"]
    detector._cache.clear()
    in_batch = detector([*others, NORMAL], return_events=False)[-1]["anomaly_score"]
    assert in_batch == pytest.approx(alone, abs=1e-5)
    detector._cache.clear()
    assert detector(NORMAL, return_events=False)["anomaly_score"] == pytest.approx(alone, abs=1e-5)


def test_identical_sessions_are_scored_once(detector, monkeypatch):
    detector._cache.clear()
    calls = []
    original = detector._score_unique
    monkeypatch.setattr(detector, "_score_unique", lambda keys, *a: calls.append(len(keys)) or original(keys, *a))
    results = detector([NORMAL] * 50 + ["22 5 5"] * 20, return_events=False)
    assert calls == [2]
    assert len({r["anomaly_score"] for r in results[:50]}) == 1


def test_unknown_events_are_flagged(detector):
    result = detector("22 5 5 5 999 11 9")
    unknown = result["events"][4]
    assert unknown["event"] == "999" and unknown["unseen"] and unknown["is_miss"]
    assert result["num_unseen"] == 1
    assert result["is_anomaly"] is True


def test_a_truncated_session_scores_higher_than_a_complete_one(detector):
    complete, truncated = detector([NORMAL, "22 5 5"], return_events=False)
    assert truncated["end_nll"] > complete["end_nll"]


def test_long_sessions_are_scored_in_windows_covering_every_event(detector):
    max_events = detector.model.config.max_position_embeddings - 2
    long_session = (NORMAL.split() * 20)[: max_events * 2 + 17]
    result = detector([long_session])[0]
    assert result["num_events"] == len(long_session) > max_events
    assert [e["position"] for e in result["events"]] == list(range(len(long_session)))
    assert all(e["probability"] > 0 for e in result["events"])


def test_an_empty_session_is_a_clear_error(detector):
    with pytest.raises(ValueError, match="empty session"):
        detector("")
    with pytest.raises(ValueError, match=r"^sessions\[1\]: empty session"):  # its place in the input
        detector([NORMAL, []])
    assert detector([]) == []  # no sessions, no results
    with pytest.raises(ValueError, match="empty session"):
        detector({"session_id": "s1", "event_sequence": []})


@pytest.mark.slow  # a fresh Python process: ~90 s on a busy 2-core machine
def test_saved_pipeline_reloads_in_a_fresh_process_offline_with_identical_scores(detector, trained_model_dir,
                                                                                 tmp_path):
    folder = tmp_path / "published"
    shutil.copytree(trained_model_dir / "best_model", folder)
    sessions = [NORMAL, "22 5 5", "22 5 5 5 999 11 9"]
    local = pipeline("log-anomaly", model=str(folder), pipeline_class=LogAnomalyPipeline, device="cpu")
    expected = [[r["anomaly_score"], r["model_score"]] for r in local(sessions, return_events=False)]
    assert expected[0][0] == 0.0 < expected[0][1]  # the known-normal gate came along too
    script = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        f"detector = pipeline(model={str(folder)!r}, trust_remote_code=True)\n"
        f"print(json.dumps([[r['anomaly_score'], r['model_score']] for r in detector({sessions!r}, "
        "return_events=False)]))\n"
    )
    # A fresh process that cannot import the logbert package: only the folder's own code may be used.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == expected
    assert (folder / "pipeline.py").exists() and (folder / "scoring.py").exists()


def test_every_event_after_the_first_gets_its_left_to_right_probability(detector):
    result = detector(NORMAL)
    assert result["events"][0]["next_probability"] is None
    assert all(0 < e["next_probability"] <= 1 for e in result["events"][1:])
    worst = max(-math.log(e["next_probability"]) for e in result["events"][1:])
    assert result["next_max_nll"] == pytest.approx(max(worst, result["end_nll"]), rel=1e-5)
    assert result["score_name"] == "next_max_nll" and result["anomaly_score"] == result["next_max_nll"]


def test_left_to_right_scores_see_only_the_events_before(detector):
    # Changing the last event cannot change what the events before it were predicted from.
    first, second = detector([NORMAL, NORMAL.rsplit(" ", 1)[0] + " 22"])
    for a, b in zip(first["events"][:-1], second["events"][:-1]):
        if a["next_probability"] is not None:
            assert a["next_probability"] == pytest.approx(b["next_probability"], rel=1e-5)


def test_known_normal_gate_scores_known_event_multisets_zero(gated_detector, trained_model_dir):
    assert (trained_model_dir / KNOWN_COUNT_VECTORS_FILE).exists()
    shuffled = " ".join(sorted(NORMAL.split()))  # same events, same counts, another order
    extra = NORMAL + " 9"  # one more event: a multiset no training session has
    known, reordered, novel, unknown = gated_detector([NORMAL, shuffled, extra, NORMAL + " 999"],
                                                      return_events=False)
    assert known["known_count_vector"] is True and known["anomaly_score"] == 0.0 and known["model_score"] > 0
    assert reordered["known_count_vector"] is True and reordered["anomaly_score"] == 0.0
    assert novel["known_count_vector"] is False and novel["anomaly_score"] == novel["model_score"]
    assert unknown["known_count_vector"] is False and unknown["is_anomaly"] is True  # [UNK] is never known
    off = gated_detector(shuffled, known_normal_gate=False, return_events=False)
    assert off["anomaly_score"] == off["model_score"] == reordered["model_score"]


def test_known_normal_gate_travels_with_save_pretrained(gated_detector, tmp_path):
    gated_detector.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / KNOWN_COUNT_VECTORS_FILE).exists()
    reloaded = pipeline("log-anomaly", model=str(tmp_path / "copy"), pipeline_class=LogAnomalyPipeline, device="cpu")
    assert reloaded.known_count_vectors == gated_detector.known_count_vectors
    assert reloaded(NORMAL, return_events=False)["anomaly_score"] == 0.0


def test_sep_is_a_candidate_only_at_the_end_slot(detector):
    result = detector(NORMAL)
    assert all(c["event"] != "[SEP]" for event in result["events"] for c in event["top_candidates"])
    assert result["end_nll"] < 5  # a complete session: [SEP] is likely at its end slot


def test_an_unknown_score_name_is_a_clear_error(detector):
    with pytest.raises(ValueError, match="score_name 'nope' is not one of"):
        detector(NORMAL, score_name="nope")
    assert detector(NORMAL, score_name="miss_ratio")["score_name"] == "miss_ratio"


# ---- Scoring modes: linear (the default) and exhaustive --------------------------------------------------------------

LONG = (NORMAL.split() * 2)[:30]  # longer than the 10-event left-to-right window


def reference_scores(detector, events, groups, context, in_place=False):
    """The definition, one unbatched, unpadded model call per row: P(event) with its group masked, and
    P(event i | at most `context` events before it) in the end slot, read at their session positions `in_place`."""
    tokenizer, model = detector.tokenizer, detector.model
    ids = [tokenizer.get_vocab()[e] for e in events]
    vocab = detector.real_vocab_size

    def probabilities(row, positions, sep_allowed, offset=0):
        input_ids = torch.tensor([row])
        targets = input_ids[0, positions].clone()
        input_ids[0, positions] = tokenizer.mask_token_id
        position_ids = torch.arange(len(row))[None]
        position_ids[0, 1:] += offset
        with torch.no_grad():
            logits = model(input_ids=input_ids, position_ids=position_ids).logits[0, positions, :vocab].float()
        logits[:, detector.never_predicted_ids] = float("-inf")
        if not sep_allowed:
            logits[:, tokenizer.sep_token_id] = float("-inf")
        return torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1).exp().tolist()

    masked = [None] * len(ids)
    full = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
    for group in groups:
        for position, p in zip(group, probabilities(full, [g + 1 for g in group], False)):
            masked[position] = p
    following = [None] + [probabilities([tokenizer.cls_token_id, *ids[max(0, i - context): i + 1]],
                                        [min(i, context) + 1], True, max(0, i - context) if in_place else 0)[0]
                          for i in range(1, len(ids))]
    return masked, following


@pytest.mark.parametrize("mode", ["linear", "exhaustive"])
def test_each_mode_scores_every_event_as_defined(detector, mode):
    result = detector(" ".join(LONG), scoring_mode=mode)
    if mode == "exhaustive":
        groups, context = [[i] for i in range(len(LONG))], len(LONG)
    else:
        k = detector.num_replicas
        assert k == 7  # round(1 / 0.15): the model's config stores no mlm_probability
        groups, context = [[i for i in range(len(LONG)) if i % k == r] for r in range(k)], 10
    masked, following = reference_scores(detector, LONG, groups, context, in_place=mode == "linear")
    assert [e["probability"] for e in result["events"]] == pytest.approx(masked, abs=1e-5)
    assert [e["next_probability"] for e in result["events"]][1:] == pytest.approx(following[1:], abs=1e-5)
    assert all(e["probability"] > 0 for e in result["events"])


def test_linear_and_exhaustive_differ_only_in_bounded_context_and_masking(detector):
    short = NORMAL.split()[:9]  # shorter than the window: the same left-to-right rows in both modes
    linear, exhaustive = (detector(" ".join(short), scoring_mode=mode) for mode in ("linear", "exhaustive"))
    for a, b in zip(linear["events"][1:], exhaustive["events"][1:]):
        assert a["next_probability"] == pytest.approx(b["next_probability"], abs=1e-5)
    assert linear["end_nll"] == pytest.approx(exhaustive["end_nll"], abs=1e-5)
    with pytest.raises(ValueError, match="scoring_mode 'nope' is not one of"):
        detector(NORMAL, scoring_mode="nope")


@pytest.mark.parametrize("mode", ["linear", "exhaustive"])
def test_long_sessions_get_a_score_for_every_event_in_each_mode(detector, mode):
    max_events = detector.model.config.max_position_embeddings - 2
    long_session = (NORMAL.split() * 20)[: max_events * 2 + 17]
    result = detector(" ".join(long_session), scoring_mode=mode)
    assert [e["position"] for e in result["events"]] == list(range(len(long_session)))
    assert all(e["probability"] > 0 for e in result["events"])
    assert all(0 < e["next_probability"] <= 1 for e in result["events"][1:])


def test_batch_size_and_batch_tokens_change_no_score_and_bound_every_forward(detector, monkeypatch):
    max_events = detector.model.config.max_position_embeddings - 2
    sessions = [NORMAL, "22 5 5", LONG, (NORMAL.split() * 20)[: max_events + 40], "5", "22 5 5 5 26 26 11 9"]
    shapes = []
    original = detector._forward
    monkeypatch.setattr(detector, "_forward", lambda inputs, **kw: shapes.append(inputs["input_ids"].shape)
                        or original(inputs, **kw))
    for mode in ("linear", "exhaustive"):
        detector._cache.clear()
        expected = detector(sessions, scoring_mode=mode)
        for settings in ({"batch_tokens": 128}, {"batch_tokens": 300}, {"batch_size": 1}, {"batch_size": 5}):
            detector._cache.clear()
            shapes.clear()
            results = detector(sessions, scoring_mode=mode, **settings)
            assert all(rows * length <= settings.get("batch_tokens", 65536) for rows, length in shapes)
            assert all(rows <= settings.get("batch_size", rows) for rows, _ in shapes)
            for a, b in zip(expected, results):
                assert b["anomaly_score"] == pytest.approx(a["anomaly_score"], abs=1e-5)
                assert [e["probability"] for e in b["events"]] == pytest.approx(
                    [e["probability"] for e in a["events"]], abs=1e-5)
    with pytest.raises(ValueError, match="batch_tokens 64 cannot hold one row"):
        detector(NORMAL, batch_tokens=64)


@pytest.mark.parametrize("mode", ["linear", "exhaustive"])
def test_without_masked_scores_the_verdict_is_the_same_from_fewer_rows(detector, monkeypatch, mode):
    sessions = [NORMAL, "22 5 5", LONG, "5", "22 5 5 5 26 26 11 9 26"]
    rows = []
    original = detector._forward
    monkeypatch.setattr(detector, "_forward", lambda inputs, **kw: rows.append(len(inputs["input_ids"]))
                        or original(inputs, **kw))
    detector._cache.clear()
    full = detector(sessions, scoring_mode=mode, threshold=5.0)
    full_rows, rows[:] = sum(rows), []
    fast = detector(sessions, scoring_mode=mode, threshold=5.0, masked_scores=False)
    masked_rows = sum(min(len(s.split() if isinstance(s, str) else s), detector.num_replicas if mode == "linear"
                          else 10**6) for s in sessions)
    assert sum(rows) == full_rows - masked_rows  # every masked row, and only those, left out
    for a, b in zip(full, fast):
        for name in ("anomaly_score", "next_max_nll", "end_nll"):
            assert b[name] == pytest.approx(a[name], abs=1e-5)
        assert (b["is_anomaly"], b["num_unseen"]) == (a["is_anomaly"], a["num_unseen"])
        assert [e["next_probability"] for e in b["events"]] == pytest.approx(
            [e["next_probability"] for e in a["events"]], abs=1e-5)
        assert all(b[name] is None for name in ("miss_ratio", "mean_nll", "max_nll", "num_misses"))
        assert all(e["probability"] is None and e["top_candidates"] is None for e in b["events"])
        json.dumps(b, allow_nan=False)  # what logbert score writes
    with pytest.raises(ValueError, match="'mean_nll' needs the masked scores"):
        detector(NORMAL, masked_scores=False, score_name="mean_nll")


def test_a_generator_of_sessions_is_scored_not_used_up(detector):
    as_list = detector([NORMAL, "22 5 5"], return_events=False)
    streamed = detector((s for s in [NORMAL, "22 5 5"]), return_events=False)
    assert [r["anomaly_score"] for r in streamed] == [r["anomaly_score"] for r in as_list]


def test_a_datasets_dataset_and_a_key_dataset_stream_through_as_in_transformers(detector):
    from datasets import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    sessions = [NORMAL, "22 5 5", "22 5 11 9"]
    rows = Dataset.from_dict({"event_sequence": [s.split() for s in sessions], "session_id": ["a", "b", "c"]})
    expected = [r["anomaly_score"] for r in detector(sessions, return_events=False)]
    by_key = list(detector(KeyDataset(rows, "event_sequence"), return_events=False))
    whole_rows = list(detector(rows, return_events=False))  # each row a session object
    assert [r["anomaly_score"] for r in by_key] == expected
    assert [r["anomaly_score"] for r in whole_rows] == expected
    assert [r["session_id"] for r in whole_rows] == ["a", "b", "c"]


def test_dtype_is_honoured_and_scores_stay_close(trained_model_dir, detector):
    half = pipeline("log-anomaly", model=str(trained_model_dir), pipeline_class=LogAnomalyPipeline, device="cpu",
                    known_normal_gate=False, dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    sessions = [NORMAL, "22 5 5"]
    full = detector(sessions, return_events=False)
    reduced = half(sessions, return_events=False)
    for a, b in zip(full, reduced):
        assert math.isfinite(b["anomaly_score"])
        assert b["anomaly_score"] == pytest.approx(a["anomaly_score"], abs=0.25)  # bfloat16: ~3 significant digits


def test_the_cache_is_bounded_and_keeps_recent_sessions(detector, monkeypatch):
    detector._cache.clear()
    monkeypatch.setattr(detector, "cache_size", 2)
    detector(["22 5 5", "22 5", "5 5"], return_events=False)
    assert len(detector._cache) == 2
    assert {key[0] for key in detector._cache} == {(tuple(detector.tokenizer.convert_tokens_to_ids(s.split())))
                                                   for s in ("22 5", "5 5")}


def test_the_cache_is_bounded_by_events_too(detector, monkeypatch):
    detector._cache.clear()
    monkeypatch.setattr(detector, "cache_events", 5)  # room for "5 5" and "22 5", not for "22 5 5" besides
    detector(["22 5 5", "22 5", "5 5"], return_events=False)
    assert len(detector._cache) == 2 and detector._cached_events == 4
    first = detector("22 5 5", return_events=False)  # scored again, evicting the oldest
    assert detector._cached_events <= 5 and first["num_events"] == 3


def test_non_finite_scores_are_an_error_not_a_verdict(detector):
    broken = copy.deepcopy(detector.model)
    with torch.no_grad():
        broken.bert.embeddings.LayerNorm.weight[0] = float("nan")
    nan_detector = LogAnomalyPipeline(model=broken, tokenizer=detector.tokenizer, device="cpu")
    with pytest.raises(ValueError, match="non-finite"):
        nan_detector(NORMAL)


def test_a_model_without_a_threshold_warns(detector, caplog):
    model = copy.deepcopy(detector.model)
    model.config.anomaly_threshold = None
    uncalibrated = LogAnomalyPipeline(model=model, tokenizer=detector.tokenizer, device="cpu")
    with caplog.at_level(logging.WARNING, logger="logbert.pipeline"):
        result = uncalibrated(NORMAL, return_events=False)
    assert result["is_anomaly"] is None
    assert "no calibrated threshold" in caplog.text


def test_token_id_models_name_events_and_candidates_alike(tmp_path):
    from logbert.config import parse_args
    from logbert.data import TOKEN_IDS_KIND
    from logbert.export import save_model_folder
    from logbert.model import build_model
    from logbert.tokenizer import build_token_id_tokenizer

    model_args = parse_args(["--config", "configs/tiny.yaml", "--vocab_size", "200",
                            "--output_dir", str(tmp_path)]).model
    tokenizer = build_token_id_tokenizer(model_args.vocab_size)
    torch.manual_seed(0)
    save_model_folder(build_model(model_args, tokenizer, TOKEN_IDS_KIND), tokenizer, str(tmp_path / "model"))
    token_detector = pipeline("log-anomaly", model=str(tmp_path / "model"), pipeline_class=LogAnomalyPipeline,
                              device="cpu", threshold=1.0)
    result = token_detector({"token_ids": [101, 150, 151, 102], "event_sequence": ["5", "22"]})
    assert [e["event"] for e in result["events"]] == ["#150", "#151"]
    assert [e["event_name"] for e in result["events"]] == ["5", "22"]
    assert all(c["event"].startswith("#") for e in result["events"] for c in e["top_candidates"])


def test_events_carry_their_template_text_when_the_model_has_a_parser_state(trained_model_dir, tmp_path):
    import json
    import shutil

    from logbert.cli import load_detector

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoint-*", "best_model"))
    templates = [{"event_id": "5", "template": "Receiving block <*> src: /<*> dest: /<*>", "occurrences": 3},
                 {"event_id": "22", "template": "BLOCK* NameSystem.allocateBlock: <*> <*>", "occurrences": 1}]
    (model / "parser_state.json").write_text(json.dumps({"format_version": 1, "templates": templates}))
    result = load_detector(str(model), device="cpu")("22 5 5")
    assert [e["template"] for e in result["events"]] == [templates[1]["template"], templates[0]["template"],
                                                         templates[0]["template"]]
    assert "template" in result["events"][0]["top_candidates"][0]


def test_a_keyword_the_pipeline_does_not_use_is_warned_about_not_dropped(detector, caplog):
    with caplog.at_level("WARNING", logger="logbert.pipeline"):
        detector(NORMAL, return_events=False, treshold=2.0, top_k=4)
    assert any("does not use top_k, treshold" in r.getMessage() for r in caplog.records)


def test_num_workers_preprocess_in_worker_processes_and_change_no_result(detector, monkeypatch):
    sessions = [NORMAL, "22 5 5", {"session_id": "s3", "event_sequence": ["5", "22", "11"]}, "26 26 21"] * 3
    detector._cache.clear()
    expected = detector(sessions)
    here = os.getpid()
    preprocessed_in = []
    original = LogAnomalyPipeline.preprocess
    monkeypatch.setattr(LogAnomalyPipeline, "preprocess",
                        lambda self, session: preprocessed_in.append(os.getpid()) or original(self, session))
    for inputs in (sessions, (s for s in sessions)):  # a list (indexable: 2 workers) and a generator (1 worker)
        detector._cache.clear()
        results = detector(inputs, num_workers=2)
        results = list(results)
        assert [r.get("session_id") for r in results] == [r.get("session_id") for r in expected]
        assert [r["anomaly_score"] for r in results] == [r["anomaly_score"] for r in expected]
        assert [e["probability"] for e in results[0]["events"]] == [e["probability"] for e in expected[0]["events"]]
    assert preprocessed_in == []  # every session was preprocessed in a worker (the patch counts in this process)
    detector(sessions[:2], num_workers=0)
    assert preprocessed_in == [here, here]  # ... as it does without workers
    with pytest.raises(ValueError, match=r"^sessions\[1\]: empty session: expected at least one event$"):
        detector([NORMAL, {"session_id": "s9", "event_sequence": []}], num_workers=1)
