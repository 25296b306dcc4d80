"""Reading one session file into records: JSON, JSON Lines, session CSV, event-ID text; the reject-or-raise path."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REJECTED_RECORDS_FILE = "rejected_records.jsonl"
SESSION_LIST_KEYS = ("sessions", "data", "records", "logs")
JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class DataError(ValueError):
    """Bad input data. The message names the file, the record and what was expected."""


@dataclass
class Rejection:
    """One record that was not used, and why (written to rejected_records.jsonl)."""

    file: str
    record: int | None  # 1-based record number in the file (line number for JSON Lines and text)
    reason: str
    content: Any = None

    def to_json(self) -> str:
        content = self.content
        if isinstance(content, (bytes, bytearray)):
            content = content.decode("utf-8", errors="backslashreplace")
        return json.dumps(
            {"file": self.file, "record": self.record, "reason": self.reason, "content": content}, default=str
        )

    def message(self) -> str:
        where = f"{self.file}: record {self.record}" if self.record else self.file
        return f"{where}: {self.reason}"


def read_file_bytes(path: str) -> bytes:
    """The file's bytes, without a UTF-8 byte-order mark."""
    with open(path, "rb") as handle:
        data = handle.read()
    # Editors on Windows write a byte-order mark; json.loads refuses it, and it is not part of any record.
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return data


def file_format(path: str, head: bytes) -> str:
    """"json", "jsonl", "csv" or "text", from the name's suffix, else from the first bytes."""
    lowered = path.lower()
    if lowered.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lowered.endswith(".csv") or _csv_header(head) is not None:
        return "csv"
    if lowered.endswith(JSON_SUFFIXES):
        return "json"
    first = head.lstrip()[:1]
    if first == b"[":
        return "json"
    if first == b"{":
        return "jsonl" if b"\n{" in head.strip() else "json"
    return "text"


def _line_of_offset(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def iter_file_records(path: str, skip_bad_records: bool) -> Iterator[tuple[int, Any] | Rejection]:
    """Yield (record number, record) for every session in a file, or a Rejection for what cannot be read.

    Records are parsed JSON values (JSON formats) or tuples of event-ID strings (text format). Errors that make
    the whole file unreadable are raised as DataError unless `skip_bad_records`, where they become one Rejection.
    """
    data = read_file_bytes(path)
    fmt = file_format(path, data[:4096])

    def fail(reason: str, record: int | None = None, content: Any = None) -> Rejection:
        rejection = Rejection(path, record, reason, content)
        if not skip_bad_records:
            raise DataError(rejection.message())
        return rejection

    if not data.strip():
        yield fail("the file is empty: expected log sessions (JSON array, JSON Lines, or event-ID lines)")
        return

    if fmt == "json":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = _line_of_offset(data, error.start)
            yield fail(f"line {line}: not UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}): "
                       "expected UTF-8 text")
            return
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg == "Extra data":  # several JSON documents: it is JSON Lines under a .json name
                yield from _iter_lines(path, data, fail, parse_json=True)
                return
            hint = " (the file looks truncated)" if error.pos >= len(text.rstrip()) - 1 else ""
            yield fail(f"line {error.lineno} column {error.colno}: not valid JSON: {error.msg}{hint}")
            return
        sessions = session_list(document)
        if sessions is None:
            yield fail(
                "expected a JSON array of session objects, or an object holding one under "
                f"{' / '.join(SESSION_LIST_KEYS)}; got {type(document).__name__}"
            )
            return
        for number, record in enumerate(sessions, start=1):
            yield number, record
    elif fmt == "csv":
        yield from _iter_csv(path, data, fail)
    else:
        if fmt == "text" and (problem := _not_event_ids(data[:65536])):
            yield fail(problem)
            return
        yield from _iter_lines(path, data, fail, parse_json=fmt == "jsonl")


def session_list(document: Any) -> list | None:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in SESSION_LIST_KEYS:
            if isinstance(document.get(key), list):
                return document[key]
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
        if "token_ids" in document or "event_sequence" in document:
            return [document]
    return None


def _iter_lines(path: str, data: bytes, fail, parse_json: bool) -> Iterator[tuple[int, Any] | Rejection]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield fail(f"line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}): "
                       "expected UTF-8 text", number, raw)
            continue
        if not parse_json:
            # A tuple marks a text line, so that a JSON list (not a session object) is never taken for one.
            yield number, tuple(line.split())
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield fail(f"line {number}: not valid JSON: {error.msg} (column {error.colno})", number, line)



# Column names of a session CSV (DeepLog/loglizer style `Sequence,label`): the events, and the optional label.
CSV_SEQUENCE_COLUMNS = ("sequence", "eventsequence", "event_sequence", "events", "event_ids")
CSV_LABEL_COLUMNS = ("label", "labels", "is_anomaly", "anomaly")
# What a line of log text has and a line of event IDs does not: a clock time, a date, or key=value / path /
# bracket punctuation in most lines.
RAW_LOG_SIGNS = re.compile(r"\d{1,2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}|[=/\[\]()$]|:\s")


def _csv_header(head: bytes) -> list[str] | None:
    """The column names when the first line is a session CSV's header (`Sequence,label`), else None."""
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    names = [name.strip().lower() for name in first.split(",")]
    return names if len(names) > 1 and any(name in CSV_SEQUENCE_COLUMNS for name in names) else None


def _iter_csv(path: str, data: bytes, fail) -> Iterator[tuple[int, Any] | Rejection]:
    """A session CSV: one session per row, events space-separated in the sequence column, an optional label."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        yield fail(f"line {_line_of_offset(data, error.start)}: not UTF-8: expected UTF-8 text")
        return
    rows = csv.reader(io.StringIO(text))
    header = [name.strip().lower() for name in next(rows, [])]
    sequence = next((header.index(name) for name in CSV_SEQUENCE_COLUMNS if name in header), None)
    label = next((header.index(name) for name in CSV_LABEL_COLUMNS if name in header), None)
    if sequence is None:
        yield fail(f"a CSV without a session column: expected one of {', '.join(CSV_SEQUENCE_COLUMNS)} in the "
                   f"header, got {', '.join(header) or 'nothing'}")
        return
    for number, row in enumerate(rows, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield fail(f"line {number}: {len(row)} columns, the header has {len(header)}", number, row)
            continue
        record: dict[str, Any] = {"event_sequence": row[sequence].split()}
        if label is not None:
            value = row[label].strip()
            record["label"] = int(value) if value.isdigit() else value
        yield number, record


def _not_event_ids(head: bytes) -> str | None:
    """Why the start of an event-ID text file is something else (raw log lines, a CSV), or None when it is not."""
    lines = [line for line in head.decode("utf-8", "replace").splitlines()[:200] if line.strip()]
    if not lines:
        return None
    if sum("," in line for line in lines) > len(lines) / 2:
        return (f"looks like a CSV, not lines of space-separated event IDs (line 1: {lines[0][:80]!r}): give it a "
                "header with a 'Sequence' column (and optionally 'label'), or convert it to JSON Lines")
    if sum(bool(RAW_LOG_SIGNS.search(line)) for line in lines) > len(lines) / 2:
        return (f"looks like raw log lines, not sessions of event IDs (line 1: {lines[0][:80]!r}). Turn raw logs "
                "into sessions first: `logbert prepare --input FILE --output_dir DIR` (if these really are event "
                "IDs, give the sessions as JSON Lines with an 'event_sequence' list)")
    return None


def write_rejections(rejected: list[Rejection], output_dir: str) -> str | None:
    """Quarantine: every skipped record with its reason, one JSON object per line."""
    if not rejected:
        return None
    path = os.path.join(output_dir, REJECTED_RECORDS_FILE)
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for rejection in rejected:
            handle.write(rejection.to_json() + "\n")
    return path
