"""Writing prepared data: session files (daily when dated), templates.csv, the structured CSV and the summary."""

from __future__ import annotations

import csv
import functools
import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone

from .reading import PrepareError
from .sessions import Session

SESSION_FILE_PREFIX = "preprocessed_logs"
SESSION_FILE_PATTERN = SESSION_FILE_PREFIX + "*.jsonl"  # the session files among what prepare writes
UNDATED = "undated"


def day_of(seconds: float | None, dated: bool) -> str:
    if seconds is None or not dated:
        return UNDATED
    return _day_name(int(seconds // 86400))


@functools.lru_cache(maxsize=4096)
def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, tz=timezone.utc).strftime("%Y-%m-%d")


def read_label_file(path: str) -> dict[str, int]:
    """Session labels from a CSV `id,label` with a header row (HDFS's anomaly_label.csv: BlockId,Label with
    Normal/Anomaly). Labels may be 0/1, true/false or normal/anomaly(ous)/abnormal."""
    names = {"0": 0, "1": 1, "false": 0, "true": 1, "normal": 0, "anomaly": 1, "anomalous": 1, "abnormal": 1}
    labels: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            next(rows, None)  # the header row
            for number, row in enumerate(rows, start=2):
                if not row:
                    continue
                if len(row) < 2 or row[1].strip().lower() not in names:
                    raise PrepareError(f"--label_file {path} line {number}: expected id,label with label "
                                       f"0/1 or Normal/Anomaly, got {','.join(row)!r}")
                labels[row[0].strip()] = names[row[1].strip().lower()]
    except OSError as error:
        raise PrepareError(f"--label_file {path}: {error.strerror or error}") from None
    return labels


class SessionSpool:
    """Closed sessions kept on disk, one spool file per day, until they can be written in time order.

    A session's record is final when it closes (a line's event id is its Drain3 cluster's, fixed from the line on;
    only the template text generalises later), so each spool line is `start<TAB>order<TAB>record`: the sort key in
    front, the record's JSON behind it, written out as it is. The spool keeps memory independent of the input
    size; sorting by start time reads one day's spool at a time.
    """

    def __init__(self, work_dir: str, dated: bool, event_id: Callable[[int], str]):
        self.work_dir, self.dated, self.event_id = work_dir, dated, event_id
        self.handles: dict[str, object] = {}
        self.count = 0
        self.lengths: list[int] = []
        self.first_session_id = ""  # quoted by the error about a label file that names no session

    def add(self, session: Session, label: int | None) -> None:
        if not self.count:
            self.first_session_id = session.session_id
        day = day_of(session.start, self.dated)
        handle = self.handles.get(day)
        if handle is None:
            handle = self.handles[day] = open(os.path.join(self.work_dir, f"spool_{day}.jsonl"), "w",
                                              encoding="utf-8")
        event_id = self.event_id
        record = {"session_id": session.session_id, "event_sequence": [event_id(c) for c in session.events]}
        if label is not None:
            record["label"] = label
        start = "" if session.start is None else repr(session.start)
        handle.write(f"{start}\t{self.count}\t{json.dumps(record)}\n")
        self.count += 1
        self.lengths.append(len(session.events))

    def finish(self, output_dir: str) -> list[str]:
        """Write the session files: one per day when every session is dated, else one file. Returns their paths."""
        for handle in self.handles.values():
            handle.close()
        days = sorted(self.handles)
        groups = [[day] for day in days] if UNDATED not in days else [days]
        paths = []
        for group in groups:
            entries = []
            for day in group:
                with open(os.path.join(self.work_dir, f"spool_{day}.jsonl"), encoding="utf-8") as handle:
                    for line in handle:
                        start, order, record = line.split("\t", 2)
                        # Time order; sessions without a time keep the order in which they closed, after the dated.
                        entries.append(((not start, float(start) if start else 0.0, int(order)), record))
            entries.sort(key=lambda entry: entry[0])
            name = f"{SESSION_FILE_PREFIX}_{group[0]}.jsonl" if group[0] != UNDATED and len(group) == 1 \
                else f"{SESSION_FILE_PREFIX}.jsonl"
            path = os.path.join(output_dir, name)
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(record for _, record in entries)
            paths.append(path)
        return paths


class StructuredSpool:
    """Per-line rows in Loghub's `_structured.csv` layout; EventId/EventTemplate are filled in at the end."""

    def __init__(self, work_dir: str, headers: list[str]):
        self.headers = headers
        self.path = os.path.join(work_dir, "structured.csv")
        self.handle = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)

    def add(self, line_id: int, header: dict, cluster_id: int) -> None:
        self.writer.writerow([line_id, *(header[name] for name in self.headers), cluster_id])

    def finish(self, target: str, event_id: Callable[[int], str], template: Callable[[int], str]) -> None:
        self.handle.close()
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(self.path, newline="", encoding="utf-8") as source, \
                open(target, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["LineId", *self.headers, "EventId", "EventTemplate"])
            for row in csv.reader(source):
                cluster = int(row[-1])
                writer.writerow([*row[:-1], event_id(cluster), template(cluster)])


def write_templates_csv(path: str, rows: list[tuple[str, str, int]]) -> None:
    """templates.csv: EventId, EventTemplate, Occurrences (Loghub's `_templates.csv` layout)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["EventId", "EventTemplate", "Occurrences"])
        writer.writerows(rows)


def length_summary(lengths: list[int]) -> dict:
    if not lengths:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 2), "max": max(lengths)}


def write_summary(path: str, summary: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)


def make_work_dir(output_dir: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(dir=output_dir, prefix=".prepare-")
