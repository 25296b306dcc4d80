"""logbert detect: raw lines -> saved templates -> sessions -> one JSON line per closed session, and --report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from logbert.prepare import detect_main, prepare_main
from tests.test_prepare import HDFS_LINES, write_log

# DeepLog's HDFS event numbers (the bundled sample's vocabulary) for the templates of HDFS_LINES and a few more.
DEEPLOG_TEMPLATES = {
    "5": "Receiving block <*> src: /<*> dest: /<*>",
    "22": "BLOCK* NameSystem.allocateBlock: <*> <*>",
    "11": "PacketResponder <*> for block <*> terminating",
    "9": "Received block <*> of size <*> from /<*>",
    "26": "BLOCK* NameSystem.addStoredBlock: blockMap updated: <*> is added to <*> size <*>",
}


class FakeDetector:
    """Scores a session by its share of [UNK] events, as the pipeline's result shape has it."""

    def __init__(self):
        self.calls = []

    def score(self, sessions, threshold=None, return_events=True):
        self.calls.append(sessions)
        threshold = 0.25 if threshold is None else threshold
        results = []
        for events in sessions:
            share = sum(e == "[UNK]" for e in events) / len(events)
            results.append({"anomaly_score": share, "is_anomaly": share > threshold, "threshold": threshold,
                            "events": [{"event": e, "probability": 0.01 if e == "[UNK]" else 0.9,
                                        "rank": 9 if e == "[UNK]" else 1, "is_miss": e == "[UNK]"}
                                       for e in events]})
        return results


def model_with_parser_state(tmp_path: Path, model: Path | None = None) -> Path:
    """A model folder (copied, or empty) whose parser_state.json names the DeepLog event numbers."""
    prepared = tmp_path / "prepared"
    assert prepare_main(["--preset", "hdfs", "--input", str(write_log(tmp_path / "train.log", HDFS_LINES)),
                         "--output_dir", str(prepared), "--no_progress"]) == 0
    state = json.loads((prepared / "parser_state.json").read_text())
    state["templates"] = [{"event_id": k, "template": v, "occurrences": 1} for k, v in DEEPLOG_TEMPLATES.items()]
    target = tmp_path / "model"
    if model is not None:
        shutil.copytree(model, target)
    target.mkdir(exist_ok=True)
    (target / "parser_state.json").write_text(json.dumps(state))
    return target


NEW_LINES = [
    "081111 100000 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010",
    "081111 100001 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/x/part-0. blk_1",
    "081111 100003 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    "garbage that fits no header",
    "081111 100600 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_2 src: /10.0.0.1:5 dest: /10.0.0.3:50010",
    "081111 100700 19 WARN dfs.DataNode: Something never seen before happened to blk_2",
    "081111 100900 145 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_2 terminating",
]


def test_detect_writes_each_closed_session_with_templates_and_lines(tmp_path, monkeypatch, capsys):
    fake = FakeDetector()
    monkeypatch.setattr("logbert.cli.load_detector", lambda model, device=None: fake)
    model = model_with_parser_state(tmp_path)
    out, report = tmp_path / "alerts.jsonl", tmp_path / "report.txt"
    code = detect_main(["--model", str(model), "--input", str(write_log(tmp_path / "new.log", NEW_LINES)),
                        "--output", str(out), "--report", str(report), "--inactivity_timeout", "300"])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # blk_1 closes when a line comes after its 300 s of silence (at 10:06:00), blk_2 at the end of the input.
    assert [r["session_id"] for r in records] == ["blk_1", "blk_2"]
    assert len(fake.calls) == 2
    blk_1, blk_2 = records
    assert [e["event"] for e in blk_1["events"]] == ["5", "22", "11"]
    assert blk_1["events"][2]["template"] == DEEPLOG_TEMPLATES["11"]
    assert blk_1["events"][0]["line"] == NEW_LINES[0] and blk_1["events"][0]["line_number"] == 1
    assert (blk_1["start_time"], blk_1["end_time"]) == ("2008-11-11T10:00:00Z", "2008-11-11T10:00:03Z")
    assert blk_1["is_anomaly"] is False and blk_1["num_unmatched"] == 0
    unknown = blk_2["events"][1]
    assert unknown["event"] == "[UNK]" and unknown["unmatched"] and unknown["template"] is None
    assert unknown["line"] == NEW_LINES[5] and unknown["is_miss"]
    assert blk_2["is_anomaly"] is True and blk_2["threshold"] == 0.25
    text = report.read_text()
    assert "7 lines (1 did not fit the log format, 1 matched no template), 2 sessions, 1 flagged" in text
    assert text.index("blk_2") < text.index("blk_1")  # most anomalous first


def test_max_events_closes_a_session_early(tmp_path, monkeypatch):
    fake = FakeDetector()
    monkeypatch.setattr("logbert.cli.load_detector", lambda model, device=None: fake)
    model = model_with_parser_state(tmp_path)
    out = tmp_path / "alerts.jsonl"
    assert detect_main(["--model", str(model), "--input", str(write_log(tmp_path / "new.log", NEW_LINES)),
                        "--output", str(out), "--max_events", "2"]) == 0
    sizes = [(r["session_id"], r["num_events"]) for r in map(json.loads, out.read_text().splitlines())]
    assert sizes == [("blk_1", 2), ("blk_2", 2), ("blk_1", 1), ("blk_2", 1)]


def test_a_model_without_parser_state_points_to_logbert_score(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert detect_main(["--model", str(tmp_path / "model"), "--input", "-"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "logbert score" in err[0]


def test_detect_with_a_trained_model(trained_model_dir, tmp_path):
    model = model_with_parser_state(tmp_path, trained_model_dir)
    out = tmp_path / "alerts.jsonl"
    assert detect_main(["--model", str(model), "--input", str(write_log(tmp_path / "new.log", NEW_LINES)),
                        "--output", str(out), "--device", "cpu"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["session_id"] for r in records] == ["blk_1", "blk_2"]
    for record in records:
        assert isinstance(record["anomaly_score"], float) and isinstance(record["is_anomaly"], bool)
        assert all(0.0 <= e["probability"] <= 1.0 for e in record["events"])
    assert records[1]["events"][1]["event"] == "[UNK]" and records[1]["events"][1]["is_miss"]


def test_detect_reads_standard_input(tmp_path, monkeypatch):
    import io

    fake = FakeDetector()
    monkeypatch.setattr("logbert.cli.load_detector", lambda model, device=None: fake)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(("\n".join(NEW_LINES) + "\n").encode())))
    model = model_with_parser_state(tmp_path)
    out = tmp_path / "alerts.jsonl"
    assert detect_main(["--model", str(model), "--input", "-", "--output", str(out)]) == 0
    assert [json.loads(line)["session_id"] for line in out.read_text().splitlines()] == ["blk_1", "blk_2"]
