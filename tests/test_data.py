"""logbert.data: session files -> validated, Arrow-cached datasets, and the errors bad input gives."""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import pytest

from logbert.data import (EVENTS_KIND, REJECTED_RECORDS_FILE, TOKEN_IDS_KIND, DataError, load_corpus,
                          tokenize_events, write_rejections)
from logbert.tokenizer import build_event_tokenizer

CLS, SEP, PAD = 101, 102, 0
VOCAB_SIZE = 10000


def load(args):
    return load_corpus(args, VOCAB_SIZE, seed=0)


def ids_of(dataset) -> list[list[int]]:
    return [list(ids) for ids in dataset["input_ids"]]


# --------------------------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------------------------

FORMATS = ["json_array", "json_object", "jsonl", "jsonl_named_json", "json_with_bom"]


def write_in_format(fmt, records, write_json, write_jsonl, write_bytes):
    if fmt == "json_array":
        return write_json("sessions.json", records)
    if fmt == "json_object":
        return write_json("sessions.json", {"sessions": records, "source": "test"})
    if fmt == "jsonl":
        return write_jsonl("sessions.jsonl", records)
    if fmt == "jsonl_named_json":
        return write_jsonl("sessions.json", records)
    return write_bytes("sessions.json", b"\xef\xbb\xbf" + json.dumps(records).encode())


@pytest.mark.parametrize("fmt", FORMATS)
def test_token_id_formats_give_the_same_sessions(fmt, token_session, write_json, write_jsonl, write_bytes,
                                                 data_args):
    events = [[5, 6, 7], [8], [9, 9, 10, 11]]
    records = [token_session(e, session_id=f"s{i}", padding=i * 3, label=i % 2) for i, e in enumerate(events)]
    path = write_in_format(fmt, records, write_json, write_jsonl, write_bytes)

    corpus = load(data_args(path))

    assert corpus.kind == TOKEN_IDS_KIND
    assert ids_of(corpus.train) == [[CLS, *e, SEP] for e in events]  # padding stripped
    assert list(corpus.train["length"]) == [len(e) + 2 for e in events]
    assert list(corpus.train["session_id"]) == ["s0", "s1", "s2"]
    assert list(corpus.train["label"]) == [0, 1, 0]
    assert corpus.rejected == [] and corpus.truncated == 0


def test_event_text_format_reads_the_bundled_sample(sample_file, sample_sessions, data_args):
    corpus = load(data_args(sample_file))

    assert corpus.kind == EVENTS_KIND
    assert len(corpus.train) == len(sample_sessions)
    assert [list(e) for e in corpus.train["event_ids"]] == sample_sessions
    assert list(corpus.train["length"]) == [min(len(s) + 2, 64) for s in sample_sessions]
    summary = corpus.summary()
    assert summary["train_sessions"] == len(sample_sessions)
    assert summary["length_max"] <= 64


def test_event_sequence_json_records_normalise_event_ids(write_json, data_args):
    path = write_json("events.json", [
        {"session_id": "a", "event_sequence": [5, "E7", 5]},
        {"session_id": "b", "event_sequence": "3 4", "label": "anomaly"},
    ])
    corpus = load(data_args(path))

    assert corpus.kind == EVENTS_KIND
    assert [list(e) for e in corpus.train["event_ids"]] == [["5", "E7", "5"], ["3", "4"]]
    assert list(corpus.train["label"]) == [-1, 1]


def test_tokenize_events_frames_sessions_and_maps_unseen_events_to_unk(tmp_path, write_json, data_args):
    path = write_json("events.json", [{"event_sequence": ["a", "b", "a"]}, {"event_sequence": ["a", "zzz", "b"]}])
    corpus = load(data_args(path, max_seq_length=4))
    tokenizer = build_event_tokenizer(Counter({"a": 2, "b": 1}))

    encoded = tokenize_events(corpus.train, tokenizer, 4, tmp_path / "encoded" / "train.arrow")

    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    assert ids_of(encoded) == [[cls, a, b, sep], [cls, a, unk, sep]]  # cut to 4 tokens, [SEP] kept
    assert list(encoded["length"]) == [4, 4]


# --------------------------------------------------------------------------------------------------------------------
# Bad records: the error names the file, the record and what was expected; with skip_bad_records they are quarantined
# --------------------------------------------------------------------------------------------------------------------

# (case, the bad record written as record 2 of 3, words the reason must contain)
BAD_RECORDS = [
    ("token_ids_not_a_list", {"token_ids": "101 5 102"}, "'token_ids' must be a list"),
    ("mask_not_a_list", {"token_ids": [101, 5, 102], "attention_mask": "111"}, "'attention_mask' must be a list"),
    ("missing_fields", {"session_id": "x", "label": 0}, "missing field"),
    ("label_wrong", {"token_ids": [101, 5, 102], "label": 7}, "'label' must be"),
    ("session_id_wrong_type", {"token_ids": [101, 5, 102], "session_id": {"a": 1}}, "'session_id' must be"),
    ("not_an_object", [101, 5, 102], "expected a session object"),
    ("length_mismatch", {"token_ids": [101, 5, 6, 102], "attention_mask": [1, 1, 1]}, "'attention_mask' has 3"),
    ("id_too_large", {"token_ids": [101, 5, VOCAB_SIZE, 102]}, "out of range"),
    ("id_negative", {"token_ids": [101, -5, 102]}, "negative"),
    ("id_float", {"token_ids": [101, 5.5, 102]}, "integers"),
    ("id_whole_float", {"token_ids": [101, 5.0, 102]}, "integers"),
    ("id_string", {"token_ids": [101, "5", 102]}, "integers"),
    ("id_null", {"token_ids": [101, None, 102]}, "integers"),
    ("id_bool", {"token_ids": [101, True, 102]}, "integers"),
    ("id_huge", {"token_ids": [101, 2**70, 102]}, "integers"),
    ("mask_not_binary", {"token_ids": [101, 5, 102], "attention_mask": [1, 2, 1]}, "0 or 1"),
    ("mask_float", {"token_ids": [101, 5, 102], "attention_mask": [1, 1.0, 1]}, "0 or 1"),
    ("mask_bool", {"token_ids": [101, 5, 102], "attention_mask": [1, True, 1]}, "0 or 1"),
    ("mask_null", {"token_ids": [101, 5, 102], "attention_mask": [1, None, 1]}, "0 or 1"),
    ("mask_not_a_prefix", {"token_ids": [101, 5, 102], "attention_mask": [1, 0, 1]}, "padding must come last"),
    ("empty_token_ids", {"token_ids": []}, "empty session"),
    ("only_cls_sep", {"token_ids": [101, 102, 0], "attention_mask": [1, 1, 0]}, "empty session"),
    ("all_padding", {"token_ids": [101, 5, 102], "attention_mask": [0, 0, 0]}, "empty session"),
]


@pytest.mark.parametrize("case, bad, reason", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
@pytest.mark.parametrize("writer", ["json", "jsonl"])
def test_bad_record_is_an_error_naming_file_record_and_expectation(case, bad, reason, writer, token_session,
                                                                   write_json, write_jsonl, data_args):
    records = [token_session([5], "a"), bad, token_session([6], "c")]
    path = write_json("bad.json", records) if writer == "json" else write_jsonl("bad.jsonl", records)

    with pytest.raises(DataError) as error:
        load(data_args(path))
    message = str(error.value)
    assert str(path) in message
    assert "record 2" in message
    assert reason in message


@pytest.mark.parametrize("case, bad, reason", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
def test_skip_bad_records_quarantines_only_the_bad_one(case, bad, reason, token_session, write_jsonl, data_args,
                                                       tmp_path):
    path = write_jsonl("bad.jsonl", [token_session([5], "a"), bad, token_session([6], "c")])

    corpus = load(data_args(path, skip_bad_records=True))

    assert ids_of(corpus.train) == [[CLS, 5, SEP], [CLS, 6, SEP]]
    assert list(corpus.train["record"]) == [1, 3]
    assert [(r.file, r.record) for r in corpus.rejected] == [(str(path), 2)]
    assert reason in corpus.rejected[0].reason

    written = write_rejections(corpus.rejected, str(tmp_path / "out"))
    assert written == str(tmp_path / "out" / REJECTED_RECORDS_FILE)
    lines = [json.loads(line) for line in open(written, encoding="utf-8")]
    assert [(r["file"], r["record"]) for r in lines] == [(str(path), 2)]
    assert reason in lines[0]["reason"]


BAD_EVENT_RECORDS = [
    ("event_sequence_not_a_list", {"event_sequence": 5}, "'event_sequence' must be a list"),
    ("event_sequence_null", {"event_sequence": None}, "'event_sequence'"),
    ("event_not_an_id", {"event_sequence": ["5", ["6"]]}, "'event_sequence'[1] must be an event ID"),
    ("empty_events", {"event_sequence": []}, "empty session"),
    ("mixed_with_token_ids", {"token_ids": [101, 5, 102]}, "mixed formats"),
]


@pytest.mark.parametrize("case, bad, reason", BAD_EVENT_RECORDS, ids=[c[0] for c in BAD_EVENT_RECORDS])
def test_bad_event_record(case, bad, reason, write_jsonl, data_args):
    path = write_jsonl("events.jsonl", [{"event_sequence": ["5"]}, bad, {"event_sequence": ["6"]}])

    with pytest.raises(DataError, match="record 2") as error:
        load(data_args(path))
    assert str(path) in str(error.value) and reason in str(error.value)

    corpus = load(data_args(path, skip_bad_records=True))
    assert [list(e) for e in corpus.train["event_ids"]] == [["5"], ["6"]]
    assert [(r.record, reason in r.reason) for r in corpus.rejected] == [(2, True)]


def test_a_bad_first_record_does_not_decide_the_file_format(token_session, write_jsonl, data_args):
    path = write_jsonl("bad_first.jsonl", [{"session_id": "x"}, token_session([5]), token_session([6])])

    corpus = load(data_args(path, skip_bad_records=True))

    assert corpus.kind == TOKEN_IDS_KIND
    assert ids_of(corpus.train) == [[CLS, 5, SEP], [CLS, 6, SEP]]
    assert [r.record for r in corpus.rejected] == [1]


# (case, file bytes, file name, words the message must contain)
BAD_FILES = [
    ("malformed_json", b'[{"token_ids": [101, 5, 102]},\n {"token_ids": [101, 6 102]}]', "bad.json",
     ["line 2 column", "not valid JSON"]),
    ("truncated_json", b'[{"token_ids": [101, 5, 102]},\n {"token_ids": [101, 6', "bad.json", ["truncated"]),
    ("empty_file", b"", "bad.json", ["empty", "expected"]),
    ("blank_file", b"  \n\n", "bad.txt", ["empty", "expected"]),
    ("not_utf8_json", b'[{"token_ids": [101, 5, 102]},\n {"session_id": "\xff\xfe"}]', "bad.json",
     ["line 2", "not UTF-8", "expected UTF-8"]),
    ("no_session_list", b'{"a": 1, "b": 2}', "bad.json", ["expected a JSON array"]),
]


@pytest.mark.parametrize("case, data, name, words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_unreadable_file_is_an_error_naming_the_file(case, data, name, words, write_bytes, token_session,
                                                     write_json, data_args):
    path = write_bytes(name, data)
    with pytest.raises(DataError) as error:
        load(data_args(path))
    assert str(path) in str(error.value)
    for word in words:
        assert word in str(error.value)

    # skipped: the file is one rejection, the other files still train
    good = write_json("good.json", [token_session([5])])
    corpus = load(data_args(path, good, skip_bad_records=True))
    assert ids_of(corpus.train) == [[CLS, 5, SEP]]
    assert [r.file for r in corpus.rejected] == [str(path)]


@pytest.mark.parametrize("writer", ["jsonl", "text"])
def test_line_errors_name_the_line(writer, write_bytes, data_args, tmp_path):
    if writer == "jsonl":
        data, name = b'{"event_sequence": ["1"]}\n{"event_sequence": ["2"\n{"event_sequence": ["3"]}\n', "x.jsonl"
        reason = "not valid JSON"
    else:
        data, name = b"1 2 3\n4 \xff 5\n6 7\n", "x.txt"
        reason = "not UTF-8"
    path = write_bytes(name, data)

    with pytest.raises(DataError, match="record 2") as error:
        load(data_args(path))
    assert str(path) in str(error.value) and reason in str(error.value)

    corpus = load(data_args(path, skip_bad_records=True))
    assert len(corpus.train) == 2
    assert [(r.record, reason in r.reason) for r in corpus.rejected] == [(2, True)]
    written = write_rejections(corpus.rejected, str(tmp_path / "out"))
    [line] = [json.loads(line) for line in open(written, encoding="utf-8")]
    assert (line["file"], line["record"]) == (str(path), 2) and line["content"]  # the bad line, kept for a look


def test_files_mixing_token_ids_and_event_ids_are_an_error(token_session, write_json, sample_file, data_args):
    tokens = write_json("tokens.json", [token_session([5])])
    with pytest.raises(DataError, match="mix formats") as error:
        load(data_args(tokens, sample_file))
    assert str(tokens) in str(error.value) and str(sample_file) in str(error.value)


# --------------------------------------------------------------------------------------------------------------------
# Over-long sessions
# --------------------------------------------------------------------------------------------------------------------


def test_long_token_session_is_truncated_keeping_the_final_sep(token_session, write_json, data_args):
    events = list(range(1000, 1020))
    path = write_json("long.json", [token_session(events, padding=4), token_session([5])])

    corpus = load(data_args(path, max_seq_length=8))

    assert ids_of(corpus.train) == [[CLS, *events[:6], SEP], [CLS, 5, SEP]]
    assert list(corpus.train["length"]) == [8, 3]
    assert corpus.truncated == 1


def test_long_token_session_without_truncation_is_an_error_or_rejected(token_session, write_json, data_args):
    path = write_json("long.json", [token_session([5]), token_session(list(range(1000, 1020)))])

    with pytest.raises(DataError, match="record 2") as error:
        load(data_args(path, max_seq_length=8, truncate_long_sessions=False))
    assert "22 tokens" in str(error.value) and "max_seq_length 8" in str(error.value)

    corpus = load(data_args(path, max_seq_length=8, truncate_long_sessions=False, skip_bad_records=True))
    assert ids_of(corpus.train) == [[CLS, 5, SEP]]
    assert [r.record for r in corpus.rejected] == [2] and corpus.truncated == 0


def test_long_event_session_is_truncated(write_bytes, data_args):
    path = write_bytes("long.txt", b"1 2 3 4 5 6 7 8 9 10\n11 12\n")

    corpus = load(data_args(path, max_seq_length=6))

    assert [list(e) for e in corpus.train["event_ids"]] == [["1", "2", "3", "4"], ["11", "12"]]
    assert list(corpus.train["length"]) == [6, 4]
    assert corpus.truncated == 1


def test_long_event_session_without_truncation_is_an_error_or_rejected(write_bytes, data_args):
    path = write_bytes("long.txt", b"11 12\n1 2 3 4 5 6 7 8 9 10\n13\n")

    with pytest.raises(DataError, match="record 2") as error:
        load(data_args(path, max_seq_length=6, truncate_long_sessions=False))
    assert str(path) in str(error.value) and "10 events" in str(error.value)

    corpus = load(data_args(path, max_seq_length=6, truncate_long_sessions=False, skip_bad_records=True))
    assert [list(e) for e in corpus.train["event_ids"]] == [["11", "12"], ["13"]]
    assert [r.record for r in corpus.rejected] == [2] and "10 events" in corpus.rejected[0].reason
    assert corpus.truncated == 0


@pytest.mark.parametrize("kind", ["token_ids", "events"])
def test_a_100k_event_session_is_truncated_or_rejected(kind, token_session, write_json, write_bytes, data_args):
    n = 100_000
    if kind == "token_ids":
        path = write_json("huge.json", [token_session([5] * n, "huge"), token_session([6], "small")])
    else:
        path = write_bytes("huge.txt", (" ".join(["7"] * n) + "\n8 9\n").encode())

    corpus = load(data_args(path, max_seq_length=16))
    assert list(corpus.train["length"]) == [16, 3 if kind == "token_ids" else 4]
    if kind == "token_ids":
        assert ids_of(corpus.train)[0] == [CLS] + [5] * 14 + [SEP]
    else:
        assert len(corpus.train["event_ids"][0]) == 14
    assert corpus.truncated == 1

    with pytest.raises(DataError, match="record 1"):
        load(data_args(path, max_seq_length=16, truncate_long_sessions=False))
    corpus = load(data_args(path, max_seq_length=16, truncate_long_sessions=False, skip_bad_records=True))
    assert len(corpus.train) == 1
    assert [r.record for r in corpus.rejected] == [1]
    length = f"{n + 2} tokens" if kind == "token_ids" else f"{n} events"  # [CLS] and [SEP] are in token_ids
    assert length in corpus.rejected[0].reason and "max_seq_length 16" in corpus.rejected[0].reason


# --------------------------------------------------------------------------------------------------------------------
# Duplicate session ids
# --------------------------------------------------------------------------------------------------------------------


def test_duplicate_session_id_in_one_file_is_an_error_naming_both_records(token_session, write_json, data_args):
    path = write_json("dup.json", [token_session([5], "a"), token_session([6], "b"), token_session([7], "a")])

    with pytest.raises(DataError, match="duplicate session_id") as error:
        load(data_args(path))
    message = str(error.value)
    assert f"{path}: record 3" in message and f"{path}: record 1" in message


def test_duplicate_session_id_across_files(token_session, write_json, data_args):
    first = write_json("2025-01-01.json", [token_session([5], "a"), token_session([6], "b")])
    second = write_json("2025-01-02.json", [token_session([7], "c"), token_session([8], "a")])

    with pytest.raises(DataError, match="duplicate session_id 'a'") as error:
        load(data_args(first, second))
    assert f"{second}: record 2" in str(error.value) and f"{first}: record 1" in str(error.value)

    corpus = load(data_args(first, second, skip_bad_records=True))
    assert list(corpus.train["session_id"]) == ["a", "b", "c"]
    assert ids_of(corpus.train) == [[CLS, 5, SEP], [CLS, 6, SEP], [CLS, 7, SEP]]
    assert [(r.file, r.record) for r in corpus.rejected] == [(str(second), 2)]
    assert "duplicate session_id 'a'" in corpus.rejected[0].reason and str(first) in corpus.rejected[0].reason


def test_a_validation_session_duplicating_a_training_one_is_rejected(token_session, write_json, data_args):
    train = write_json("train.json", [token_session([5], "a"), token_session([6], "b")])
    validation = write_json("valid.json", [token_session([7], "b"), token_session([8], "c")])

    corpus = load(data_args(train, validation_file=[str(validation)], skip_bad_records=True))

    assert list(corpus.train["session_id"]) == ["a", "b"]
    assert list(corpus.validation["session_id"]) == ["c"]
    assert [(r.file, r.record) for r in corpus.rejected] == [(str(validation), 1)]


def test_sessions_without_ids_are_not_duplicates(write_bytes, data_args):
    path = write_bytes("same.txt", b"1 2\n1 2\n")
    assert len(load(data_args(path)).train) == 2


# --------------------------------------------------------------------------------------------------------------------
# Holding out validation sessions
# --------------------------------------------------------------------------------------------------------------------


def test_validation_file_is_used_as_given(token_session, write_json, data_args):
    train = write_json("train.json", [token_session([i], f"t{i}") for i in range(5, 15)])
    validation = write_json("valid.json", [token_session([i], f"v{i}") for i in range(5, 8)])

    corpus = load(data_args(train, validation_file=[str(validation)], validation_split_percentage=50))

    assert len(corpus.train) == 10
    assert list(corpus.validation["session_id"]) == ["v5", "v6", "v7"]
    assert corpus.validation_files == [str(validation)]


def test_random_split_is_deterministic_for_a_seed(token_session, write_json, data_args):
    path = write_json("a.json", [token_session([5 + i % 50], f"s{i}") for i in range(200)])
    args = data_args(path, validation_split_percentage=10)

    splits = [load_corpus(args, VOCAB_SIZE, seed) for seed in (1, 1, 2)]

    held_out = [set(c.validation["session_id"]) for c in splits]
    assert held_out[0] == held_out[1] != held_out[2]
    for corpus, validation in zip(splits, held_out):
        train = set(corpus.train["session_id"])
        assert len(validation) == math.ceil(200 * 0.10)
        assert not train & validation and len(train | validation) == 200


def test_chronological_split_holds_out_the_last_files(token_session, write_json, data_args):
    files = [write_json(f"2025-01-0{day}.json", [token_session([day], f"d{day}-{i}") for i in range(3)])
             for day in (4, 2, 3, 1)]

    corpus = load(data_args(*files, validation_split="chronological", validation_split_percentage=25))

    assert [os.path.basename(f) for f in corpus.train_files] == ["2025-01-01.json", "2025-01-02.json",
                                                                 "2025-01-03.json"]
    assert [os.path.basename(f) for f in corpus.validation_files] == ["2025-01-04.json"]
    assert set(corpus.validation["session_id"]) == {"d4-0", "d4-1", "d4-2"}
    assert len(corpus.train) == 9


def test_chronological_split_of_one_file_holds_out_its_last_sessions(sample_file, sample_sessions, data_args):
    corpus = load(data_args(sample_file, validation_split="chronological", validation_split_percentage=5))

    held = math.ceil(len(sample_sessions) * 0.05)
    assert len(corpus.validation) == held
    assert [list(e) for e in corpus.validation["event_ids"]] == sample_sessions[-held:]
    assert [list(e) for e in corpus.train["event_ids"]] == sample_sessions[:-held]


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_a_single_session_is_never_held_out(split, token_session, write_json, data_args):
    path = write_json("one.json", [token_session([5])])
    corpus = load(data_args(path, validation_split=split, validation_split_percentage=50))
    assert len(corpus.train) == 1 and corpus.validation is None


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_a_split_always_leaves_training_sessions(split, token_session, write_json, data_args):
    path = write_json("two.json", [token_session([5]), token_session([6])])
    corpus = load(data_args(path, validation_split=split, validation_split_percentage=99))
    assert (len(corpus.train), len(corpus.validation)) == (1, 1)


def test_max_train_and_eval_samples(sample_file, data_args):
    corpus = load(data_args(sample_file, validation_split_percentage=10, max_train_samples=7, max_eval_samples=3))
    assert (len(corpus.train), len(corpus.validation)) == (7, 3)


def test_write_rejections_writes_nothing_without_rejections(tmp_path):
    assert write_rejections([], str(tmp_path / "out")) is None
    assert not (tmp_path / "out" / REJECTED_RECORDS_FILE).exists()
