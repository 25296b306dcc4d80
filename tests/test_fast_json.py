"""logbert.ingest.fast_json: taken on the reference layout, and the slow path's result bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from logbert.data import load_corpus
from logbert.ingest import ParseSettings, cache
from logbert.ingest.fast_json import _are_string_lists, _cut_arrays, _parse_integers, parse_token_json_fast
from logbert.ingest.validate import parse_records

SETTINGS = ParseSettings(vocab_size=10000, max_seq_length=16, truncate_long_sessions=True, skip_bad_records=False)


def reference_records(count: int = 20, max_seq_length: int = 24) -> list[dict]:
    """Sessions as the reference files hold them: exactly these four keys, padded to max_seq_length."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        events = [int(e) for e in rng.integers(104, 10000, size=int(rng.integers(1, max_seq_length - 1)))]
        ids = [101, *events, 102]
        records.append({"session_id": f"2025-02-24-{i:06d}", "event_sequence": [str(e) for e in events],
                        "token_ids": ids + [0] * (max_seq_length - len(ids)),
                        "attention_mask": [1] * len(ids) + [0] * (max_seq_length - len(ids))})
    return records


def test_cut_arrays_replaces_innermost_number_and_string_arrays():
    skeleton, starts, ends, numeric = _cut_arrays(b'[{"a": [1, 2], "b": ["x"], "c": [{"d": 3}]}]')
    assert skeleton == b'[{"a": NaN, "b": NaN, "c": [{"d": 3}]}]'
    assert numeric == [True, False]
    assert [b'[{"a": [1, 2], "b": ["x"], "c": [{"d": 3}]}]'[s:e] for s, e in zip(starts, ends)] == [b"1, 2", b'"x"']


@pytest.mark.parametrize("text, expected", [
    (b"12, 7, 431", [12, 7, 431]), (b"0", [0]), (b"99999999", [99999999]),
    (b"12,7", None), (b"007", None), (b"1.5", None), (b"-1", None), (b"1, ", None), (b"123456789", None),
])
def test_parse_integers_accepts_only_json_dump_integers(text, expected):
    parsed = _parse_integers(text, 8)
    assert (parsed is None) if expected is None else list(parsed[0]) == expected


def test_string_lists_must_be_plain_strings():
    assert _are_string_lists(b'"a", "b c", "d"')
    assert not _are_string_lists(b'"a\\"", "b"') and not _are_string_lists(b'"a","b"')


def test_fast_path_is_taken_on_a_reference_file(tmp_path, data_args, monkeypatch):
    path = tmp_path / "preprocessed_logs_2025-02-24.json"
    path.write_text(json.dumps(reference_records()))
    assert parse_token_json_fast(str(path), SETTINGS) is not None

    def slow_path(*args):
        raise AssertionError("the slow path was taken on a reference-layout file")

    monkeypatch.setattr(cache, "parse_records", slow_path)
    corpus = load_corpus(data_args(path), 10000, seed=0)
    assert corpus.parsed_files == 1 and len(corpus.train) == 20


@pytest.mark.parametrize("max_seq_length, truncate", [(16, True), (64, True), (64, False)])
@pytest.mark.parametrize("extra", [{}, {"label": 1}, {"label": "normal", "block_id": None}])
def test_fast_path_gives_the_slow_paths_result_bit_for_bit(max_seq_length, truncate, extra, tmp_path):
    records = [{**r, **extra} for r in reference_records()]
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(records))
    settings = ParseSettings(10000, max_seq_length, truncate, skip_bad_records=False)

    fast, slow = parse_token_json_fast(str(path), settings), parse_records(str(path), settings)

    assert fast is not None
    assert fast.table.schema == slow.table.schema
    assert fast.table.equals(slow.table)
    assert (fast.kind, fast.truncated, fast.rejected) == (slow.kind, slow.truncated, slow.rejected)
    assert (fast.truncated > 0) == (max_seq_length == 16)


@pytest.mark.parametrize("case", ["indented", "bad_record", "mask_gap", "id_out_of_range", "jsonl", "too_long"])
def test_fast_path_declines_what_it_cannot_vouch_for(case, tmp_path):
    records = reference_records()
    settings = SETTINGS
    name, text = "sessions.json", None
    if case == "indented":
        text = json.dumps(records, indent=1)
    elif case == "bad_record":
        records[3]["token_ids"][1] = 5.5
    elif case == "mask_gap":
        records[3]["attention_mask"][1] = 0
    elif case == "id_out_of_range":
        records[3]["token_ids"][1] = 10000
    elif case == "jsonl":
        name, text = "sessions.jsonl", "".join(json.dumps(r) + "\n" for r in records)
    else:
        settings = ParseSettings(10000, 16, truncate_long_sessions=False, skip_bad_records=False)
    path = tmp_path / name
    path.write_text(text if text is not None else json.dumps(records))
    assert parse_token_json_fast(str(path), settings) is None
