"""logbert prepare: header parsing, timestamps, sessions, files the trainer reads, summary and bad input."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from logbert.data import DataArguments, iter_file_records, load_corpus
from logbert.prepare import PrepareError, SessionRule, Sessionizer, build_format_regex, prepare_main
from logbert.prepare.mining import MINING_BATCH_LINES, BackgroundMiner
from logbert.prepare.output import SESSION_FILE_PATTERN
from logbert.prepare.presets import PRESETS
from logbert.prepare.reading import TimestampParser
from logbert.prepare.templates import DrainSettings

HDFS_FORMAT = "<Date> <Time> <Pid> <Level> <Component>: <Content>"
HDFS_LINES = [
    "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",  # noqa: E501
    "081109 203518 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /mnt/hadoop/mapred/system/job_200811092030_0001/job.jar. blk_-1608999687919862906",  # noqa: E501
    "081109 203519 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_7503483334202473044 src: /10.251.215.16:55695 dest: /10.251.215.16:50010",  # noqa: E501
    "081109 203519 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_-1608999687919862906 terminating",  # noqa: E501
    "081109 203520 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /mnt/hadoop/mapred/system/job_200811092030_0001/job.split. blk_7503483334202473044",  # noqa: E501
    "081109 203521 145 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_7503483334202473044 terminating",  # noqa: E501
    "081110 000001 19 INFO dfs.FSNamesystem: BLOCK* ask 10.250.14.224:50010 to delete  blk_-1608999687919862906 blk_7503483334202473044",  # noqa: E501
    "081110 000002 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_42 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",  # noqa: E501
    "081110 000003 145 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block blk_42 terminating",
]
LOGHUB = next((p / "data" / "loghub_2k" for p in (Path("/work/shared"), Path("../shared")) if p.is_dir()), None)


def write_log(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def run_prepare(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "prepared"
    return prepare_main([*args, "--output_dir", str(out), "--no_progress"]), out


def read_sessions(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(out.glob("preprocessed_logs*.jsonl"))
            for line in path.read_text().splitlines()]


# ---- header and time ------------------------------------------------------------------------------------------

def test_log_format_reads_the_header_fields_and_content():
    regex, headers = build_format_regex(HDFS_FORMAT)
    fields = regex.match(HDFS_LINES[0]).groupdict()
    assert headers == ["Date", "Time", "Pid", "Level", "Component", "Content"]
    assert fields["Component"] == "dfs.DataNode$DataXceiver"
    assert fields["Content"].startswith("Receiving block blk_-1608999687919862906 src:")
    assert regex.match("not a log line") is None


def logparser_format_regex(log_format: str) -> re.Pattern:
    """logparser's own construction (Drain/Drain.py, generate_logformat_regex): every field a lazy `.*?`."""
    pieces = re.split(r"(<[^<>]+>)", log_format)
    pattern = "".join(re.sub(" +", r"\\s+", piece) if k % 2 == 0 else f"(?P<{piece[1:-1]}>.*?)"
                      for k, piece in enumerate(pieces))
    return re.compile("^" + pattern + "$")


@pytest.mark.parametrize("log_format", [
    *(preset["log_format"] for preset in PRESETS.values()),
    "<A> <B>: <Content>", r"\[<A> <B>\] <Content> <Tail>", "<A><B> <Content>", "<A>  <B>\\t<Content>",
])
def test_log_format_regex_matches_exactly_what_logparsers_lazy_regex_does(log_format):
    ours, _ = build_format_regex(log_format)
    reference = logparser_format_regex(log_format)
    rng = random.Random(log_format)
    alphabet = ["a", "b", "7", " ", "  ", "\t", ":", ": ", "[", "]", "-", "@", ",", ".", "x y"]
    # Half the lines fill the format's own literal text with random fields (so most of them parse), half are noise.
    literal_text = re.sub(r"\\(.)", r"\1", log_format.replace("(", "").replace(")?", ""))
    for number in range(3000):
        if number % 2:
            line = re.sub(r"<[^<>]+>", lambda _: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))),
                          literal_text).strip()
        else:
            line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))).strip()
        expected = reference.match(line)
        got = ours.match(line)
        assert (got and got.groupdict()) == (expected and expected.groupdict()), line


def test_log_format_without_content_is_an_error():
    with pytest.raises(PrepareError, match="no <Content> field"):
        build_format_regex("<Date> <Time> <Message>")


@pytest.mark.parametrize("fields, time_format, header", [
    (["Date", "Time"], "%y%m%d %H%M%S", {"Date": "081109", "Time": "203615"}),
    (["Time"], "%Y-%m-%d-%H.%M.%S.%f", {"Time": "2005-06-03-15.42.50.675872"}),
    (["Date", "Time"], "%Y-%m-%d %H:%M:%S,%f", {"Date": "2015-10-18", "Time": "18:01:47,978"}),
    (["Month", "Date", "Time"], "%b %d %H:%M:%S", {"Month": "Feb", "Date": "29", "Time": "15:16:01"}),
])
def test_fast_timestamps_equal_strptime(fields, time_format, header):
    parser = TimestampParser(fields, time_format)
    assert parser._fast is not None
    assert parser(header) == pytest.approx(parser._slow(" ".join(header[f] for f in fields)))
    assert parser({**header, fields[-1]: "garbage"}) is None


def test_timestamps_of_one_second_keep_their_own_fractions():
    parser = TimestampParser(["Date", "Time"], "%Y-%m-%d %H:%M:%S,%f")
    times = ["18:01:47,978", "18:01:47,5", "18:01:47,000001", "18:01:48,25"]
    values = [parser({"Date": "2015-10-18", "Time": time}) for time in times]
    assert values == [pytest.approx(parser._slow("2015-10-18 " + time), abs=1e-6) for time in times]
    assert values[1] - values[0] == pytest.approx(-0.478)
    for bad in ("18:01:47", "18:01:47,", "18:01:47,1234567", "18:01:47,12a"):
        assert parser({"Date": "2015-10-18", "Time": bad}) is None, bad


# ---- sessions ---------------------------------------------------------------------------------------------------

def add_lines(sessionizer: Sessionizer, lines: list[str], times: list[float | None] | None = None) -> list:
    closed = []
    for number, line in enumerate(lines):
        closed += sessionizer.add(line, {}, times[number] if times else None, number)
    return closed + sessionizer.close_all()


def test_a_line_naming_several_blocks_joins_each():
    closed = add_lines(Sessionizer(SessionRule(session_regex=r"blk_-?\d+")),
                       ["a blk_1", "b blk_2 blk_1 blk_2", "c blk_2"])
    assert {s.session_id: s.events for s in closed} == {"blk_1": [0, 1], "blk_2": [1, 2]}


def test_regex_group_names_the_session():
    closed = add_lines(Sessionizer(SessionRule(session_regex=r"instance: (\w+)")), ["x instance: a1", "y"])
    assert [s.session_id for s in closed] == ["a1"]


def test_sliding_line_windows():
    closed = add_lines(Sessionizer(SessionRule(window_size=3, window_step=2)), list("abcdefg"))
    assert [s.events for s in closed] == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6]]


def test_time_windows_close_when_log_time_passes_them():
    sessionizer = Sessionizer(SessionRule(time_window=60))
    assert sessionizer.add("a", {}, 0.0, 0) == [] and sessionizer.add("b", {}, 59.0, 1) == []
    closed = sessionizer.add("c", {}, 61.0, 2)
    assert [(s.session_id, s.events) for s in closed] == [("1970-01-01T00:00:00Z", [0, 1])]


def test_inactivity_timeout_and_max_events_close_sessions():
    sessionizer = Sessionizer(SessionRule(session_regex=r"s\d", inactivity_timeout=10, max_events=2))
    assert sessionizer.add("s1", {}, 0.0, 0) == []
    assert sessionizer.add("s2", {}, 5.0, 1) == []
    assert [s.session_id for s in sessionizer.add("s2", {}, 12.0, 2)] == ["s1", "s2"]  # idle s1, full s2


def test_two_session_rules_are_an_error():
    with pytest.raises(PrepareError, match="choose one session rule"):
        SessionRule(session_regex="x", window_size=3)


# ---- the whole stage --------------------------------------------------------------------------------------------

def test_prepare_writes_sessions_the_trainer_reads(tmp_path):
    plain = write_log(tmp_path / "a.log", HDFS_LINES[:4])
    zipped = write_log(tmp_path / "b.log.gz", HDFS_LINES[4:], gz=True)
    labels = tmp_path / "anomaly_label.csv"
    labels.write_text("BlockId,Label\nblk_-1608999687919862906,Normal\nblk_7503483334202473044,Anomaly\n")
    structured = tmp_path / "structured.csv"
    code, out = run_prepare(tmp_path, "--preset", "hdfs", "--input", str(plain), str(zipped),
                            "--label_file", str(labels), "--structured_csv", str(structured))
    assert code == 0
    files = sorted(p.name for p in out.glob("preprocessed_logs*"))
    assert files == ["preprocessed_logs_2008-11-09.jsonl", "preprocessed_logs_2008-11-10.jsonl"]
    sessions = {s["session_id"]: s for s in read_sessions(out)}
    assert set(sessions) == {"blk_-1608999687919862906", "blk_7503483334202473044", "blk_42"}
    receiving, allocate, terminating, delete = "E1", "E2", "E3", "E4"
    assert sessions["blk_-1608999687919862906"]["event_sequence"] == [receiving, allocate, terminating, delete]
    assert sessions["blk_7503483334202473044"] == {"session_id": "blk_7503483334202473044", "label": 1,
                                                   "event_sequence": [receiving, allocate, terminating, delete]}
    assert "label" not in sessions["blk_42"]  # not in the label file: unlabelled, not normal

    # The trainer's own readers accept the files unchanged.
    for path in out.glob("preprocessed_logs*.jsonl"):
        records = list(iter_file_records(str(path), skip_bad_records=False))
        assert all(isinstance(r, tuple) and isinstance(r[1], dict) for r in records)
    # parser_state.json and prepare_summary.json sit beside the sessions, and --data-dir's default patterns
    # (*.json) would take them for session files: the session files are named by SESSION_FILE_PATTERN.
    corpus = load_corpus(DataArguments(data_dir=str(out), file_pattern=[SESSION_FILE_PATTERN],
                                       data_cache_dir=str(tmp_path / "cache"), max_seq_length=16,
                                       validation_split_percentage=0.0), vocab_size=0, seed=0)
    assert corpus.train.num_rows == 3

    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["lines"] == summary["parsed"] == len(HDFS_LINES)
    assert summary["sessions"] == 3 and summary["templates"] == 4
    assert summary["session_length"] == {"min": 2, "mean": 3.33, "max": 4}
    with open(out / "templates.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["EventId"], int(r["Occurrences"])) for r in rows] == [("E1", 3), ("E2", 2), ("E3", 3), ("E4", 1)]
    assert rows[2]["EventTemplate"] == "PacketResponder <*> for block <*> terminating"
    with open(structured, newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0]) == ["LineId", "Date", "Time", "Pid", "Level", "Component", "Content", "EventId",
                              "EventTemplate"]
    assert [r["EventId"] for r in lines] == ["E1", "E2", "E1", "E3", "E2", "E3", "E4", "E1", "E3"]


def test_unparsed_and_non_utf8_lines_are_counted_not_dropped(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(("\n".join(HDFS_LINES[:3]) + "\nthis line has no header\n").encode()
                     + HDFS_LINES[3].encode().replace(b"terminating", b"termin\xffating") + b"\n")
    code, out = run_prepare(tmp_path, "--preset", "hdfs", "--input", str(path))
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert code == 0
    assert (summary["lines"], summary["parsed"], summary["unparsed"], summary["non_utf8_lines"]) == (5, 4, 1, 1)
    assert summary["unparsed_examples"] == ["this line has no header"]


def test_bgl_style_line_labels_and_field_sessions(tmp_path):
    lines = [f"{tag} 1117838570 2005.06.03 {node} 2005-06-03-15.42.{sec:02d}.675872 {node} RAS KERNEL INFO {text}"
             for tag, node, sec, text in [("-", "R02", 1, "instruction cache parity error corrected"),
                                          ("KERNDTLB", "R03", 2, "data TLB error interrupt"),
                                          ("-", "R02", 3, "instruction cache parity error corrected")]]
    code, out = run_prepare(tmp_path, "--preset", "bgl", "--session_field", "Node",
                            "--input", str(write_log(tmp_path / "bgl.log", lines)))
    assert code == 0
    sessions = {s["session_id"]: (s["label"], len(s["event_sequence"])) for s in read_sessions(out)}
    assert sessions == {"R02": (0, 2), "R03": (1, 1)}


def test_sliding_windows_without_timestamps_make_one_file(tmp_path):
    code, out = run_prepare(tmp_path, "--log_format", HDFS_FORMAT, "--window_size", "4", "--window_step", "2",
                            "--input", str(write_log(tmp_path / "x.log", HDFS_LINES)))
    assert code == 0
    assert [p.name for p in out.glob("preprocessed_logs*")] == ["preprocessed_logs.jsonl"]
    assert [len(s["event_sequence"]) for s in read_sessions(out)] == [4, 4, 4, 3, 1]


def test_sessions_of_about_one_event_are_warned_about(tmp_path, caplog):
    log = str(write_log(tmp_path / "x.log", HDFS_LINES))
    with caplog.at_level("WARNING", logger="logbert"):
        assert run_prepare(tmp_path, "--log_format", HDFS_FORMAT, "--window_size", "1", "--input", log)[0] == 0
    assert any("Sessions hold 1.0 events on average" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="logbert"):
        assert run_prepare(tmp_path, "--preset", "hdfs", "--input", log)[0] == 0  # blocks of 3-4 events: no warning
    assert not any("events on average" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("args, message", [
    (["--log_format", "<Date> <Time> <Message>", "--window_size", "2"], "has no <Content> field"),
    (["--preset", "hdfs", "--session_regex", "instance: (\\w+)"], "matched none of the 9 parsed lines"),
    (["--preset", "hdfs", "--label_file", "LABELS"], "none of its 1 ids names one of the 3 sessions"),
    (["--log_format", "<Content>"], "no session rule"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, message):
    labels = tmp_path / "labels.csv"
    labels.write_text("BlockId,Label\nblk_999,Anomaly\n")
    args = [str(labels) if a == "LABELS" else a for a in args]
    code, _ = run_prepare(tmp_path, *args, "--input", str(write_log(tmp_path / "x.log", HDFS_LINES)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_help_is_readable_and_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--help"])
    assert exit_info.value.code == 0 and "--session_regex" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--inp", "x", "--output_dir", "y"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(LOGHUB is None, reason="the shared Loghub samples are not on this machine")
def test_mining_in_a_second_process_writes_exactly_what_inline_mining_writes(tmp_path):
    # Over two mining batches of lines, with block ids, hosts and times varied so that templates generalise.
    lines = [line.replace("blk_", f"blk_{n}").replace("10.250", f"10.{n % 256}").replace(" 2035", f" 20{n % 60:02d}")
             for n in range(2 * MINING_BATCH_LINES // len(HDFS_LINES) + 7) for line in HDFS_LINES]
    log = write_log(tmp_path / "hdfs.log", lines)
    written = {}
    for choice in ("no", "yes"):
        out = tmp_path / choice
        structured = tmp_path / f"{choice}_structured.csv"
        assert prepare_main(["--preset", "hdfs", "--input", str(log), "--output_dir", str(out), "--no_progress",
                             "--structured_csv", str(structured), "--mine_in_background", choice]) == 0
        written[choice] = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
        written[choice]["structured"] = structured.read_bytes()
    assert len(lines) > 2 * MINING_BATCH_LINES
    assert written["yes"] == written["no"]
    assert sum(name.startswith("preprocessed_logs") for name in written["yes"]) >= 2  # two days of sessions


def test_background_mining_from_a_script_without_a_main_guard(tmp_path):
    # multiprocessing's "spawn" would run such a script again in the child; the miner's own child does not.
    log = write_log(tmp_path / "hdfs.log", HDFS_LINES)
    script = tmp_path / "prepare_it.py"
    script.write_text("from logbert.prepare import prepare_main\n"
                      f"print('RUN', prepare_main(['--preset', 'hdfs', '--input', {str(log)!r}, '--output_dir', "
                      f"{str(tmp_path / 'out')!r}, '--no_progress', '--mine_in_background', 'yes']))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RUN") == 1 and "RUN 0" in done.stdout
    assert (tmp_path / "out" / "templates.csv").is_file()


def test_a_mining_process_that_dies_is_a_one_line_error():
    miner = BackgroundMiner(DrainSettings())
    miner._process.kill()
    miner._process.wait()
    with pytest.raises(PrepareError, match="Drain3 mining process stopped"):
        miner.submit(["a line"])
        miner.receive()
    miner.close()


def test_a_mining_process_that_cannot_start_says_why_in_one_line(tmp_path, monkeypatch):
    broken_python = tmp_path / "python"
    broken_python.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                             "echo 'ImportError: no drain3 here' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken_python))
    miner = BackgroundMiner(DrainSettings())
    try:
        with pytest.raises(PrepareError, match=r"stopped \(exit code 3\): ImportError: no drain3 here$"):
            miner.submit(["a line"])
            miner.receive()
    finally:
        miner.close()


def test_hdfs_2k_grouping_accuracy_with_the_preset(tmp_path):
    from benchmarks.bench_prepare import event_column, grouping_accuracy

    structured = tmp_path / "s.csv"
    code, _ = run_prepare(tmp_path, "--preset", "hdfs", "--input", str(LOGHUB / "HDFS_2k.log"),
                          "--structured_csv", str(structured))
    assert code == 0
    truth = event_column(str(LOGHUB / "HDFS_2k.log_structured.csv"))
    assert grouping_accuracy(truth, event_column(str(structured))) >= 0.99


# One line of each system, as Loghub has them; the id the preset's session rule should find (None: time windows).
PRESET_LINES = {
    "hdfs": (HDFS_LINES[3], "blk_-1608999687919862906"),
    "bgl": (("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL "
            "INFO instruction cache parity error corrected"), None),
    "openstack": (('nova-compute.log.1.2017-05-16_13:55:31 2017-05-16 00:00:04.500 2931 INFO nova.compute.manager '
                  '[req-3ea4052c-895d-4b64-9e2d-04d64c4d94ab - - - - -] [instance: '
                  'b9000564-fe1a-409b-b8cc-1e88b294cd1d] VM Started (Lifecycle Event)'),
                  "b9000564-fe1a-409b-b8cc-1e88b294cd1d"),
    "hadoop": (("2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created "
               "MRAppMaster for application appattempt_1445144423722_0020_000001"), "1445144423722_0020"),
    "spark": (("17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers for "
              "[TERM, HUP, INT]"), None),
    "zookeeper": (("2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774]"
                  " - Notification time out: 3200"), None),
    "linux": (("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 "
              "tty=NODEVssh ruser= rhost=218.188.2.4"), None),
}


@pytest.mark.parametrize("preset", sorted(PRESET_LINES))
def test_every_preset_reads_its_system_header_time_and_session(preset):
    from logbert.prepare.presets import get_preset

    line, session_id = PRESET_LINES[preset]
    settings = get_preset(preset)
    regex, _ = build_format_regex(settings["log_format"])
    header = regex.match(line).groupdict()
    assert header["Content"] and not header["Content"].startswith(" ")
    assert TimestampParser(settings["time"]["fields"], settings["time"]["format"])(header) is not None
    keys = Sessionizer(SessionRule(**settings["session"])).keys_of(line, header, 0.0)
    assert keys == ([session_id] if session_id else [0.0])


@pytest.mark.skipif(LOGHUB is None, reason="the shared Loghub/DeepLog data is not on this machine")
def test_rendered_deeplog_sessions_come_back_from_prepare(tmp_path):
    """benchmarks/render_hdfs_logs.py -> prepare gives back each DeepLog session, one template per event number."""
    from benchmarks.render_hdfs_logs import main as render

    raw = tmp_path / "raw"
    assert render(["--data-dir", str(LOGHUB.parent), "--output-dir", str(raw), "--max-sessions", "200", "--gzip"]) == 0
    code, out = run_prepare(tmp_path, "--preset", "hdfs", "--input", str(raw / "hdfs_train.log.gz"),
                            "--label_file", str(raw / "anomaly_label.csv"))
    assert code == 0
    with open(raw / "anomaly_label.csv", newline="") as handle:
        blocks = [row["BlockId"] for row in csv.DictReader(handle)][:200]  # hdfs_train's blocks come first
    originals = (LOGHUB.parent / "hdfs_deeplog" / "hdfs_train").read_text().splitlines()[:200]
    truth = {block: line.split() for block, line in zip(blocks, originals)}
    mapping: dict[str, set] = {}
    sessions = read_sessions(out)
    assert len(sessions) == 200 and all(s["label"] == 0 for s in sessions)
    for session in sessions:
        original = truth[session["session_id"]]
        assert len(session["event_sequence"]) == len(original)
        for event, number in zip(session["event_sequence"], original):
            mapping.setdefault(event, set()).add(number)
    assert all(len(numbers) == 1 for numbers in mapping.values())  # one event number per template ...
    assert len({n for numbers in mapping.values() for n in numbers}) == len(mapping)  # ... and vice versa
