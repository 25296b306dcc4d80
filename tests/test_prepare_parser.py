"""The parser state: plain JSON written by prepare, rebuilt by load_parser, copied into the model folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from logbert.prepare import PrepareError, copy_parser_state, load_parser, prepare_main
from tests.test_prepare import HDFS_LINES, LOGHUB, write_log


@pytest.fixture
def prepared(tmp_path) -> Path:
    out = tmp_path / "prepared"
    assert prepare_main(["--preset", "hdfs", "--input", str(write_log(tmp_path / "x.log", HDFS_LINES)),
                         "--output_dir", str(out), "--no_progress", "--structured_csv", str(out / "s.csv")]) == 0
    return out


def test_parser_state_is_plain_json_with_everything_detection_needs(prepared):
    text = (prepared / "parser_state.json").read_text()
    state = json.loads(text)
    assert "py/" not in text  # nothing jsonpickle would turn back into objects
    assert state["preset"] == "hdfs" and "<Content>" in state["log_format"]
    assert state["session"] == {"session_regex": r"blk_-?\d+"}
    assert state["time"] == {"fields": ["Date", "Time"], "format": "%y%m%d %H%M%S"}
    assert state["drain"]["depth"] == 4 and state["drain"]["sim_th"] == 0.5
    assert {"regex_pattern": r"blk_-?\d+", "mask_with": "*"} in state["drain"]["masking"]
    assert [t["event_id"] for t in state["templates"]] == ["E1", "E2", "E3", "E4"]


def test_loaded_parser_gives_lines_the_event_ids_of_mining(prepared):
    matcher = load_parser(str(prepared / "parser_state.json"))
    with open(prepared / "s.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [matcher.match(row["Content"]) for row in rows] == [row["EventId"] for row in rows]
    # New parameters still match; a line of another shape matches nothing, and nothing is learned from it.
    assert matcher.match("PacketResponder 7 for block blk_123 terminating") == "E3"
    before = dict(matcher.templates)
    assert matcher.match("Unexpected error trying to delete block blk_1") is None
    assert matcher.match("Unexpected error trying to delete block blk_1") is None
    assert matcher.templates == before


def test_copy_parser_state_into_the_model_folder(prepared, tmp_path):
    model = tmp_path / "model"
    assert copy_parser_state(str(prepared), str(model)) == str(model / "parser_state.json")
    assert load_parser(str(model)).templates == load_parser(str(prepared)).templates
    assert copy_parser_state(str(tmp_path / "no-such-data"), str(model)) is None


def test_a_broken_parser_state_is_refused(prepared, tmp_path):
    state = json.loads((prepared / "parser_state.json").read_text())
    del state["templates"]
    (prepared / "parser_state.json").write_text(json.dumps(state))
    with pytest.raises(PrepareError, match="lacks templates"):
        copy_parser_state(str(prepared), str(tmp_path / "model"))
    (prepared / "parser_state.json").write_text("{not json")
    with pytest.raises(PrepareError, match="not valid JSON"):
        load_parser(str(prepared))


@pytest.mark.skipif(LOGHUB is None, reason="the shared Loghub samples are not on this machine")
@pytest.mark.parametrize("name", ["HDFS", "BGL"])
def test_loaded_parser_agrees_with_mining_on_loghub_samples(tmp_path, name):
    out = tmp_path / name
    assert prepare_main(["--preset", name.lower(), "--input", str(LOGHUB / f"{name}_2k.log"), "--output_dir",
                         str(out), "--no_progress", "--structured_csv", str(out / "s.csv")]) == 0
    matcher = load_parser(str(out))
    with open(out / "s.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    agree = sum(matcher.match(row["Content"]) == row["EventId"] for row in rows)
    # Drain can make two templates that fit a line equally well (HDFS_2k: two identical ones): 1 line in 2,000.
    assert agree / len(rows) >= 0.999
