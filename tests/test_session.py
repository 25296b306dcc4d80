"""logbert.session: one validated `Session` from any way a session is given, with training's rules and messages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import logbert.session as session_module
from logbert.session import (EVENTS_KIND, FRAME_TOKEN_IDS, SEED_SPECIAL_IDS, TOKEN_IDS_KIND, Session, SessionError,
                             normalize_session)


def test_session_module_imports_only_the_standard_library():
    # It ships beside pipeline.py as remote code: no numpy, torch, transformers, or package-relative import.
    tree = ast.parse(Path(session_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert imported <= {"__future__", "collections", "dataclasses", "typing"}


def test_frame_tokens_are_cls_sep_and_pad():
    assert FRAME_TOKEN_IDS == {SEED_SPECIAL_IDS["[CLS]"], SEED_SPECIAL_IDS["[SEP]"], SEED_SPECIAL_IDS["[PAD]"]}


@pytest.mark.parametrize("given, events", [
    ({"event_sequence": [5, "E7", 5]}, ["5", "E7", "5"]),
    ({"event_ids": ["a"]}, ["a"]),
    ({"event_sequence": "3 4"}, ["3", "4"]),  # a string is whitespace-separated IDs, never characters
    (("3", "4"), ["3", "4"]),
    (["3", 4], ["3", "4"]),
    ("E1  E2\tE3", ["E1", "E2", "E3"]),
])
def test_event_sessions(given, events):
    assert normalize_session(given) == Session(EVENTS_KIND, events=events)


def test_token_sessions_strip_padding_and_keep_the_frame():
    record = {"token_ids": [101, 5, 6, 102, 0, 0], "attention_mask": [1, 1, 1, 1, 0, 0], "session_id": "blk_1",
              "label": "anomaly"}
    assert normalize_session(record) == Session(TOKEN_IDS_KIND, token_ids=[101, 5, 6, 102], session_id="blk_1",
                                                label=1)
    assert normalize_session({"token_ids": [101, 5, 102], "block_id": 7, "is_anomaly": False}) == Session(
        TOKEN_IDS_KIND, token_ids=[101, 5, 102], session_id="7", label=0)


# (case, record, words of the reason) -- what training rejects, scoring must reject with the same words.
BAD = [
    ("event_sequence_number", {"event_sequence": 5}, "'event_sequence' must be a list of event IDs, got int"),
    ("event_sequence_null", {"event_sequence": None}, "'event_sequence' is null"),
    ("event_float", {"event_sequence": ["5", 1.5]}, "'event_sequence'[1] must be an event ID"),
    ("event_bool", {"event_sequence": [True]}, "'event_sequence'[0] must be an event ID"),
    ("event_null", ["5", None], "'event_sequence'[1] must be an event ID"),
    ("event_nested", ["5", ["6"]], "'event_sequence'[1] must be an event ID"),
    ("event_with_space", [22, "5 5 11"], "'event_sequence'[1] must be an event ID"),
    ("event_blank", ["5", ""], "'event_sequence'[1] must be an event ID"),
    ("empty_events", {"event_sequence": []}, "empty session"),
    ("empty_string", "   ", "empty session"),
    ("token_ids_string", {"token_ids": "101 5 102"}, "'token_ids' must be a list of integers, got str"),
    ("token_id_string", {"token_ids": [101, "5", 102]}, "'token_ids' must hold integers in [0, vocab_size), found '5'"),
    ("token_id_float", {"token_ids": [101, 5.0, 102]}, "found 5.0"),
    ("token_id_bool", {"token_ids": [101, True, 102]}, "found True"),
    ("token_id_huge", {"token_ids": [101, 2**70, 102]}, "must hold integers"),
    ("token_id_negative", {"token_ids": [101, -5, 102]}, "token id -5 is negative"),
    ("mask_short", {"token_ids": [101, 5, 102], "attention_mask": [1, 1]}, "'attention_mask' has 2"),
    ("mask_long", {"token_ids": [101, 5, 102], "attention_mask": [1, 1, 1, 0]}, "'attention_mask' has 4"),
    ("mask_two", {"token_ids": [101, 5, 102], "attention_mask": [1, 2, 1]}, "must hold 0 or 1, found 2"),
    ("mask_float", {"token_ids": [101, 5, 102], "attention_mask": [1, 1.0, 1]}, "must hold 0 or 1, found 1.0"),
    ("mask_gap", {"token_ids": [101, 5, 102], "attention_mask": [1, 0, 1]}, "padding must come last"),
    ("mask_not_a_list", {"token_ids": [101, 5, 102], "attention_mask": "111"}, "'attention_mask' must be a list"),
    ("only_frame", {"token_ids": [101, 102, 0]}, "empty session"),
    ("only_special", {"token_ids": [101, 100, 103, 102]}, "empty session"),
    ("empty_token_ids", {"token_ids": []}, "empty session"),
    ("label_wrong", {"token_ids": [101, 5, 102], "label": 7}, "'label' must be 0/1"),
    ("session_id_wrong", {"event_sequence": ["5"], "session_id": [1]}, "'session_id' must be a string or an integer"),
    ("no_session_field", {"session_id": "x"}, "missing field"),
    ("not_a_session", 5, "expected a session object"),
]


@pytest.mark.parametrize("case, record, reason", BAD, ids=[c[0] for c in BAD])
def test_invalid_sessions_raise_naming_where(case, record, reason):
    with pytest.raises(SessionError) as error:
        normalize_session(record, where="day1.json: record 3")
    assert reason in error.value.reason
    assert str(error.value) == f"day1.json: record 3: {error.value.reason}"
    assert isinstance(error.value, ValueError)


def test_vocab_size_bounds_token_ids_only_under_the_mask():
    with pytest.raises(SessionError, match="token id 10000 is out of range: ids must be below vocab_size 10000"):
        normalize_session({"token_ids": [101, 10000, 102]}, vocab_size=10000)
    padded = {"token_ids": [101, 5, 102, 99999], "attention_mask": [1, 1, 1, 0]}
    assert normalize_session(padded, vocab_size=10000).token_ids == [101, 5, 102]
