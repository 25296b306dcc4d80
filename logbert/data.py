"""Session files (JSON, JSON Lines, event-ID text) -> validated, Arrow-cached `datasets.Dataset`s."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import glob
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.table import MemoryMappedTable, concat_tables

from .config import SAMPLE_TRAIN_FILE, DataArguments

logger = logging.getLogger(__name__)

# Bump when the shard layout or the validation rules change: old caches are then rebuilt, never misread.
CACHE_FORMAT_VERSION = 3
# The seed's token-id convention (that of BERT's uncased vocabulary), used for data that carries `token_ids`.
SEED_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
TOKEN_IDS_KIND = "token_ids"
EVENTS_KIND = "events"
REJECTED_RECORDS_FILE = "rejected_records.jsonl"
SESSION_LIST_KEYS = ("sessions", "data", "records", "logs")
SESSION_ID_KEYS = ("session_id", "block_id", "BlockId", "id")
LABEL_NAMES = {"normal": 0, "anomaly": 1, "anomalous": 1, "abnormal": 1}
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


@dataclass(frozen=True)
class ParseSettings:
    """Everything that changes how a file is parsed; part of the cache key."""

    vocab_size: int
    max_seq_length: int
    truncate_long_sessions: bool
    skip_bad_records: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "max_seq_length": self.max_seq_length,
            "truncate_long_sessions": self.truncate_long_sessions,
            "skip_bad_records": self.skip_bad_records,
        }


@dataclass
class FileShard:
    """One input file parsed into one Arrow file in the cache."""

    source: str
    arrow_path: str
    kind: str | None  # None for a file with no usable session
    sessions: int
    truncated: int
    rejected: list[Rejection] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------------
# Finding files
# --------------------------------------------------------------------------------------------------------------------


def expand_data_files(patterns: Iterable[str], what: str) -> list[str]:
    """Expand files, globs and directories into a sorted list of files; a pattern matching nothing is an error."""
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            matches = sorted(p for p in glob.glob(os.path.join(pattern, "*")) if os.path.isfile(p))
        else:
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not matches:
            raise DataError(f"{what} {pattern}: no such file (or no file matches the pattern)")
        files.extend(matches)
    # Name order is time order for daily files such as preprocessed_logs_2025-02-24.json.
    return sorted(dict.fromkeys(os.path.abspath(f) for f in files))


def resolve_data_files(data_args: DataArguments) -> tuple[list[str], list[str]]:
    """The training and validation files the arguments name. No data flag at all means the bundled sample."""
    if data_args.train_file:
        train = expand_data_files(data_args.train_file, "--train_file")
    elif data_args.data_dir:
        if not os.path.isdir(data_args.data_dir):
            raise DataError(f"--data-dir {data_args.data_dir}: no such directory")
        train = sorted(
            {
                os.path.abspath(p)
                for pattern in data_args.file_pattern
                for p in glob.glob(os.path.join(data_args.data_dir, "**", pattern), recursive=True)
                if os.path.isfile(p)
            }
        )
        if not train:
            raise DataError(
                f"--data-dir {data_args.data_dir}: no file matches --file_pattern {' '.join(data_args.file_pattern)}"
            )
    else:
        logger.info("No data given: training on the bundled HDFS sample %s", SAMPLE_TRAIN_FILE)
        train = [str(SAMPLE_TRAIN_FILE)]
    validation = expand_data_files(data_args.validation_file, "--validation_file") if data_args.validation_file else []
    overlap = set(train) & set(validation)
    if overlap:
        raise DataError(f"these files are both training and validation files: {', '.join(sorted(overlap))}")
    return train, validation


# --------------------------------------------------------------------------------------------------------------------
# Reading one file into records
# --------------------------------------------------------------------------------------------------------------------


def _file_format(path: str, head: bytes) -> str:
    lowered = path.lower()
    if lowered.endswith(JSONL_SUFFIXES):
        return "jsonl"
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
    with open(path, "rb") as handle:
        data = handle.read()
    # Editors on Windows write a byte-order mark; json.loads refuses it, and it is not part of any record.
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    fmt = _file_format(path, data[:4096])

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
        sessions = _session_list(document)
        if sessions is None:
            yield fail(
                "expected a JSON array of session objects, or an object holding one under "
                f"{' / '.join(SESSION_LIST_KEYS)}; got {type(document).__name__}"
            )
            return
        for number, record in enumerate(sessions, start=1):
            yield number, record
    else:
        yield from _iter_lines(path, data, fail, parse_json=fmt == "jsonl")


def _session_list(document: Any) -> list | None:
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


# --------------------------------------------------------------------------------------------------------------------
# Validating records into columns
# --------------------------------------------------------------------------------------------------------------------


def _record_kind(record: Any) -> str | None:
    """TOKEN_IDS_KIND, EVENTS_KIND, or None for a record that is neither (it is rejected, and decides nothing)."""
    if isinstance(record, tuple):  # a line of the event-ID text format
        return EVENTS_KIND
    if isinstance(record, dict):
        if "token_ids" in record:
            return TOKEN_IDS_KIND
        if "event_sequence" in record or "event_ids" in record:
            return EVENTS_KIND
    return None


def _check_label(record: dict) -> tuple[int, str | None]:
    label = record.get("label", record.get("is_anomaly"))
    if label is None:
        return -1, None
    if isinstance(label, bool):
        return int(label), None
    if isinstance(label, int) and label in (0, 1):
        return label, None
    if isinstance(label, str) and label.strip().lower() in LABEL_NAMES:
        return LABEL_NAMES[label.strip().lower()], None
    return -1, f"'label' must be 0/1, true/false or normal/anomaly, got {label!r}"


def _session_id(record: dict) -> tuple[str, str | None]:
    """The record's session id ("" when it has none), or a problem with it."""
    for key in SESSION_ID_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return "", f"'{key}' must be a string or an integer, got {type(value).__name__}"
        return str(value), None
    return "", None


def _events_of(record: tuple | dict) -> tuple[list[str] | None, str | None]:
    """Event IDs of a text line or of a JSON record's `event_sequence`, as strings."""
    if isinstance(record, tuple):  # a text line, already split
        return list(record), None
    events = record.get("event_sequence", record.get("event_ids"))
    if events is None:
        return None, "'event_sequence' is null: expected a list of event IDs"
    if isinstance(events, str):
        events = events.split()
    if not isinstance(events, list):
        return None, f"'event_sequence' must be a list of event IDs, got {type(events).__name__}"
    normalised = []
    for position, event in enumerate(events):
        if isinstance(event, bool) or not isinstance(event, (int, str)) or (isinstance(event, str) and
                                                                           (not event or any(c.isspace() for c in event))):
            return None, f"'event_sequence'[{position}] must be an event ID (integer or non-blank string), got {event!r}"
        normalised.append(str(event))
    return normalised, None


def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def _integer_lists(lists: list[list]) -> pa.ListArray | None:
    """`lists` as one Arrow list<int64> array, or None when any entry is not an integer.

    Arrow's own conversion to int64 would accept (and silently truncate) 1.5, and turn null into a missing
    value; letting Arrow infer the type and checking it catches both without a Python loop per token.
    """
    try:
        array = pa.array(lists)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return None
    if len(array) == 0:
        return pa.array([], pa.list_(pa.int64()))
    if not pa.types.is_list(array.type) or array.values.null_count:
        return None
    if pa.types.is_null(array.type.value_type):  # every list empty
        return array.cast(pa.list_(pa.int64()))
    return array if array.type.value_type == pa.int64() else None


def _truncate_sessions(kept: np.ndarray, lengths: np.ndarray, too_long: np.ndarray,
                       max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the sessions `too_long` of the concatenated token ids `kept` to max_seq_length, keeping the final token."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    drop = np.zeros(len(kept), dtype=bool)
    for record in too_long:
        drop[offsets[record] + max_seq_length - 1: offsets[record + 1] - 1] = True  # keep the final [SEP]
    return kept[~drop], np.minimum(lengths, max_seq_length)


class _ShardBuilder:
    """Collects the valid records of one file into columns, and the invalid ones as Rejections."""

    def __init__(self, path: str, settings: ParseSettings):
        self.path = path
        self.settings = settings
        self.kind: str | None = None  # set by the first valid record: one bad first record must not decide it
        self.session_ids: list[str] = []
        self.labels: list[int] = []
        self.records: list[int] = []
        self.sequences: list[list] = []  # token ids (token_ids kind) or event strings (events kind)
        self.masks: list[list | None] = []
        self.rejected: list[Rejection] = []
        self.truncated = 0

    def reject(self, number: int | None, reason: str, content: Any = None) -> None:
        rejection = Rejection(self.path, number, reason, content)
        if not self.settings.skip_bad_records:
            raise DataError(rejection.message())
        self.rejected.append(rejection)

    def add(self, number: int, record: Any) -> None:
        kind = _record_kind(record)
        if kind is None:
            if isinstance(record, dict):
                return self.reject(number, "missing field: expected 'token_ids' or 'event_sequence'", record)
            return self.reject(
                number, f"expected a session object with 'token_ids' or 'event_sequence', got {type(record).__name__}",
                record)
        if self.kind is not None and kind != self.kind:
            expected = "'token_ids'" if self.kind == TOKEN_IDS_KIND else "'event_sequence' without 'token_ids'"
            return self.reject(number, f"mixed formats: earlier records have {expected}, this one does not", record)

        label, session_id = -1, ""
        if isinstance(record, dict):
            label, problem = _check_label(record)
            if problem:
                return self.reject(number, problem, record)
            session_id, problem = _session_id(record)
            if problem:
                return self.reject(number, problem, record)
        if kind == TOKEN_IDS_KIND:
            ids, mask = record["token_ids"], record.get("attention_mask")
            if not isinstance(ids, list):
                return self.reject(number, f"'token_ids' must be a list of integers, got {type(ids).__name__}", record)
            if mask is not None and not isinstance(mask, list):
                return self.reject(number, f"'attention_mask' must be a list of 0/1, got {type(mask).__name__}", record)
            if mask is not None and len(mask) != len(ids):
                return self.reject(
                    number, f"'token_ids' has {len(ids)} entries but 'attention_mask' has {len(mask)}: "
                    "expected the same length", record
                )
            self.sequences.append(ids)
            self.masks.append(mask)
        else:
            events, problem = _events_of(record)
            if problem:
                return self.reject(number, problem, record)
            if not events:
                return self.reject(number, "empty session: expected at least one event", record)
            self.sequences.append(events)
        self.kind = kind
        self.session_ids.append(session_id)
        self.labels.append(label)
        self.records.append(number)

    def _drop(self, keep: np.ndarray) -> None:
        index = np.flatnonzero(keep)
        for name in ("session_ids", "labels", "records", "sequences", "masks"):
            values = getattr(self, name)
            if values:
                setattr(self, name, [values[i] for i in index])

    def _token_table(self) -> pa.Table:
        """Vectorised checks of every token id at once; only offending records are looked at one by one."""
        settings = self.settings
        count = len(self.sequences)
        reasons: dict[int, str] = {}

        # Per-record type check is the slow path, so try the whole file as one Arrow array first.
        ids = _integer_lists(self.sequences)
        masks = _integer_lists([m if m is not None else [1] * len(s) for m, s in zip(self.masks, self.sequences)])
        if ids is None or masks is None:
            for i, (sequence, mask) in enumerate(zip(self.sequences, self.masks)):
                bad = [x for x in sequence if not _is_int64(x)]
                if bad:
                    reasons[i] = f"'token_ids' must hold integers in [0, vocab_size), found {bad[0]!r}"
                    continue
                bad = [x for x in mask or () if not _is_int64(x) or x not in (0, 1)]
                if bad:
                    reasons[i] = f"'attention_mask' must hold 0 or 1, found {bad[0]!r}"
            return self._reject_records(reasons, self._token_table)

        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy(zero_copy_only=False)
        mask_values = masks.values.to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        owner = np.repeat(np.arange(count), lengths)  # record index of every token

        def flag(bad_tokens: np.ndarray, describe) -> None:
            for token_index in np.flatnonzero(bad_tokens):
                record = owner[token_index]
                if record not in reasons:
                    reasons[record] = describe(token_index)

        flag((mask_values != 0) & (mask_values != 1),
             lambda t: f"'attention_mask' must hold 0 or 1, found {mask_values[t]}")
        # Padding must come last: a 1 after a 0 inside one record means a mask that is not a prefix.
        rises = np.zeros(len(mask_values), dtype=bool)
        rises[1:] = (mask_values[1:] > mask_values[:-1]) & (owner[1:] == owner[:-1])
        flag(rises, lambda t: "'attention_mask' has a 1 after a 0: padding must come last")
        real = mask_values == 1
        flag(real & (values < 0), lambda t: f"token id {values[t]} is negative: ids must be in [0, vocab_size)")
        flag(real & (values >= settings.vocab_size),
             lambda t: f"token id {values[t]} is out of range: ids must be below vocab_size {settings.vocab_size}")
        special = np.isin(values, list(SEED_SPECIAL_IDS.values()))
        events_per_record = np.bincount(owner[real & ~special], minlength=count)
        for record in np.flatnonzero(events_per_record == 0):
            reasons.setdefault(record, "empty session: expected at least one event besides [CLS]/[SEP]/[PAD]")
        if reasons:
            return self._reject_records(reasons, self._token_table)

        # Strip padding (the mask is a prefix of ones), then cut over-long sessions keeping the final token.
        real_lengths = np.bincount(owner[real], minlength=count)
        kept = values[real]
        too_long = np.flatnonzero(real_lengths > settings.max_seq_length)
        if len(too_long):
            if not settings.truncate_long_sessions:
                return self._reject_records({i: f"session has {real_lengths[i]} tokens, more than max_seq_length "
                                                f"{settings.max_seq_length} (--truncate_long_sessions cuts it)"
                                             for i in too_long}, self._token_table)
            kept, real_lengths = _truncate_sessions(kept, real_lengths, too_long, settings.max_seq_length)
            self.truncated += len(too_long)
        return self._session_table(kept, real_lengths)

    def _session_table(self, kept: np.ndarray, real_lengths: np.ndarray) -> pa.Table:
        """The shard's columns from the real (unpadded) token ids of all sessions, concatenated."""
        real_offsets = np.concatenate([[0], np.cumsum(real_lengths)])
        input_ids = pa.ListArray.from_arrays(pa.array(real_offsets, pa.int32()), pa.array(kept, pa.int32()))
        return pa.table({
            "input_ids": input_ids,
            "length": pa.array(real_lengths, pa.int32()),
            "session_id": pa.array(self.session_ids, pa.string()),
            "label": pa.array(self.labels, pa.int8()),
            "record": pa.array(self.records, pa.int32()),
        })

    def _reject_records(self, reasons: dict[int, str], rebuild) -> pa.Table:
        """Raise for the first bad record, or (skip_bad_records) quarantine them all and build the rest."""
        first = min(reasons)
        if not self.settings.skip_bad_records:
            raise DataError(f"{self.path}: record {self.records[first]}: {reasons[first]}")
        for i in sorted(reasons):
            content = ({"token_ids": self.sequences[i], "attention_mask": self.masks[i]} if self.kind == TOKEN_IDS_KIND
                       else {"event_sequence": self.sequences[i]})
            self.rejected.append(Rejection(self.path, self.records[i], reasons[i], content))
        keep = np.ones(len(self.sequences), dtype=bool)
        keep[list(reasons)] = False
        self._drop(keep)
        return rebuild()

    def _event_table(self) -> pa.Table:
        limit = self.settings.max_seq_length - 2  # [CLS] and [SEP] take two of the positions
        lengths = np.fromiter((len(s) for s in self.sequences), dtype=np.int64, count=len(self.sequences))
        too_long = np.flatnonzero(lengths > limit)
        if len(too_long) and not self.settings.truncate_long_sessions:
            return self._reject_records(
                {int(i): f"session has {lengths[i]} events, more than max_seq_length {self.settings.max_seq_length}"
                         " - 2 ([CLS] and [SEP]) (--truncate_long_sessions cuts it)" for i in too_long},
                self._event_table)
        # Cut here rather than only at tokenization: the vocabulary is then counted on the events the model sees,
        # and a 100,000-event session costs the cache no more than a short one.
        for i in too_long:
            self.sequences[i] = self.sequences[i][:limit]
        self.truncated += len(too_long)
        return pa.table({
            "event_ids": pa.array(self.sequences, pa.list_(pa.string())),
            "length": pa.array(np.minimum(lengths, limit) + 2, pa.int32()),
            "session_id": pa.array(self.session_ids, pa.string()),
            "label": pa.array(self.labels, pa.int8()),
            "record": pa.array(self.records, pa.int32()),
        })

    def table(self) -> pa.Table | None:
        if not self.sequences:
            return None
        return self._token_table() if self.kind == TOKEN_IDS_KIND else self._event_table()


# --------------------------------------------------------------------------------------------------------------------
# Fast path: token-id sessions as `json.dump` writes them, read without a Python object per token
# --------------------------------------------------------------------------------------------------------------------
#
# A reference-scale corpus is 2.5 million sessions of 512 token ids and 512 attention-mask entries: json.loads
# makes a Python int of each (2.5 billion) and turning them into Arrow arrays costs as much again; together they
# were over 90% of data preparation. The fast path cuts every innermost JSON array out of the file, checks and
# converts the arrays with bytes and numpy operations, and gives json.loads only the skeleton that is left (the
# session objects, each array replaced by a NaN placeholder), so everything but the arrays is still read by
# json.loads's own rules. It accepts only what it can prove well-formed in json.dump's layout (", " between
# items, no indentation); any other layout, anything it cannot prove, and any record the slow path would
# reject send the whole file to the slow path, so results and messages are the slow path's. Over-long sessions
# are cut by the same function as there.

_DIGIT_BYTES = frozenset(b"0123456789")
_QUOTE = ord('"')
_COMMA, _SPACE, _ZERO = ord(","), ord(" "), ord("0")
_PLACEHOLDER = b"NaN"
_SEPARATOR = b", "
_STRING_SEPARATOR = b'", "'
_REFERENCE_KEYS = {"token_ids", "attention_mask", "event_sequence", "session_id"}


def _cut_arrays(data: bytes) -> tuple[bytes, list[int], list[int], list[bool]]:
    """Cut the innermost arrays that open with a digit or a quote out of a JSON text.

    Returns (skeleton, starts, ends, numeric): the text with each such array replaced by NaN, where each array's
    content starts and ends in `data`, and whether it opened with a digit. A bracket inside a string can be
    taken for an array here; the caller finds out, because json.loads then reads that NaN as part of a string
    (the arrays cut hold no quote, or balanced quotes, so what is string and what is not stays the same).
    """
    find = data.find
    pieces, starts, ends, numeric = [], [], [], []
    position = copied = 0
    last = len(data) - 1
    while True:
        start = find(b"[", position)
        if start < 0 or start >= last:
            break
        first = data[start + 1]
        if first != _QUOTE and first not in _DIGIT_BYTES:  # an array of objects, a blank, a sign: not cut
            position = start + 1
            continue
        end = find(b"]", start)
        if end < 0:
            break
        inner = find(b"[", start + 1, end)
        if inner >= 0:  # not innermost: look at the inner one next
            position = inner
            continue
        pieces.append(data[copied:start])
        starts.append(start + 1)
        ends.append(end)
        numeric.append(first != _QUOTE)
        copied = position = end + 1
    pieces.append(data[copied:])
    return _PLACEHOLDER.join(pieces), starts, ends, numeric


def _are_string_lists(text: bytes) -> bool:
    """Whether `text`, string-array contents joined by ", ", is exactly '"a", "b", ...' with plain strings.

    Plain: no quote, backslash or control character inside. Counting proves the layout: with no backslash, the
    text opening and closing with a quote, Q quotes and K occurrences of '", "' with Q = 2K + 2 (and neither end
    inside an occurrence), every quote but the first and the last is in exactly one separator, so the text is
    strings separated by ", ".
    """
    if len(text) < 2 or text[0] != _QUOTE or text[-1] != _QUOTE or b"\\" in text:
        return False
    if text.startswith(_STRING_SEPARATOR) or text.endswith(_STRING_SEPARATOR):
        return False
    if text.count(b'"') != 2 * text.count(_STRING_SEPARATOR) + 2:
        return False
    if np.frombuffer(text, dtype=np.uint8).min() < 0x20:  # a raw control character: not valid JSON
        return False
    if not text.isascii():
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _parse_integers(text: bytes, max_digits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The non-negative integers of `text` written as "12, 7, 431", and where each starts in `text`.

    None unless `text` is exactly that (JSON numbers: no sign, fraction, exponent or leading zero) and every
    number has at most `max_digits` (up to 8) digits. The digits are read a machine word at a time: the word
    ending at each number's last byte, its other bytes masked off, is combined pairwise (x10, x100, x10^4).
    """
    raw = np.frombuffer(text, dtype=np.uint8)
    if not len(raw) or max_digits > 8:
        return None
    commas = np.flatnonzero(raw == _COMMA)
    count = len(commas) + 1
    # ", " after every comma and nothing but digits elsewhere: then the numbers are the runs between separators.
    if len(commas) and (commas[-1] + 1 >= len(raw) or (raw[commas + 1] != _SPACE).any()):
        return None
    if np.count_nonzero((raw - np.uint8(_ZERO)) < 10) != len(raw) - 2 * len(commas):
        return None
    ends = np.empty(count, dtype=np.int64)
    ends[:-1] = commas
    ends[-1] = len(raw)
    digits = np.empty(count, dtype=np.int64)
    digits[0] = ends[0]
    np.subtract(ends[1:], ends[:-1] + 2, out=digits[1:])
    if digits.min() < 1 or digits.max() > max_digits:
        return None

    width = 4 if max_digits <= 4 else 8
    word = np.dtype("<u4" if width == 4 else "<u8").type
    padded = np.empty(len(raw) + width, dtype=np.uint8)
    padded[:width] = _SPACE
    padded[width:] = raw
    # Overlapping little-endian words, one per byte offset: word k holds padded[k: k + width].
    windows = np.ndarray((len(raw) + 1,), dtype=word, buffer=padded, strides=(1,))
    shift = (8 * (width - digits)).astype(word)
    keep = word(np.iinfo(word).max) << shift  # the number's own bytes: the top `digits` of the word
    value = (windows[ends] & keep) - (word(int.from_bytes(b"0" * width, "little")) & keep)
    if (((value >> shift) & word(0xFF)) == 0)[digits > 1].any():  # a leading zero: 007 is not JSON
        return None
    # Bytes are digits, most significant first: pairs of bytes -> 16-bit lanes (x10), lanes -> (x100), ...
    value = (value & word(0x00FF00FF00FF00FF & np.iinfo(word).max)) * word(10) + \
        ((value >> word(8)) & word(0x00FF00FF00FF00FF & np.iinfo(word).max))
    value = (value & word(0x0000FFFF0000FFFF & np.iinfo(word).max)) * word(100) + \
        ((value >> word(16)) & word(0x0000FFFF0000FFFF & np.iinfo(word).max))
    if width == 8:
        value = (value & word(0xFFFFFFFF)) * word(10000) + (value >> word(32))
    return value.astype(np.int64), ends - digits


def _parse_token_json_fast(path: str, settings: ParseSettings) -> tuple[pa.Table, _ShardBuilder] | None:
    """`parse_session_file` for a JSON array of valid token-id sessions; None whenever it cannot be sure.

    None means: use the slow path. It is returned for any other format or layout, any record the slow path
    would reject or cut, and any doubt, so that a result returned here is the slow path's, bit for bit.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if _file_format(path, data[:4096]) != "json":
        return None
    skeleton, starts, ends, numeric = _cut_arrays(data)
    # Each placeholder NaN must be one of ours, and json.loads must read every one of them as a value: one read
    # as string content was a bracket inside a string. parse_constant hands out (index, is_numeric) in text
    # order (it is called for NaN and +-Infinity only, and the file has no Infinity outside the arrays).
    if not starts or skeleton.count(_PLACEHOLDER) != len(starts) or b"Infinity" in skeleton:
        return None
    slots = iter(list(zip(range(len(starts)), numeric)))
    try:
        document = json.loads(skeleton.decode("utf-8"), parse_constant=partial(next, slots))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    sessions = _session_list(document)
    if not sessions or next(slots, None) is not None:
        return None

    builder = _ShardBuilder(path, settings)
    mask_templates: dict[tuple[int, int], bytes] = {}
    zero_tails: dict[int, bytes] = {}
    regions = []  # each session's real token ids, as text
    real_lengths = [0] * len(sessions)  # from the mask; 0: no mask, the ids are counted instead
    referenced = 0  # numeric arrays used as some session's ids or mask
    find, startswith, endswith = data.find, data.startswith, data.endswith
    session_ids, labels = builder.session_ids, builder.labels
    for number, record in enumerate(sessions):
        if type(record) is not dict:
            return None
        ids, mask = record.get("token_ids"), record.get("attention_mask")
        if type(ids) is not tuple or not ids[1]:
            return None
        if record.keys() == _REFERENCE_KEYS and type(record["session_id"]) is str:
            session_ids.append(record["session_id"])  # the reference layout, without the general checks below
            labels.append(-1)
        else:
            label, problem = _check_label(record)
            session_id, id_problem = _session_id(record)
            if problem or id_problem:
                return None
            session_ids.append(session_id)
            labels.append(label)
        id_start, id_end = starts[ids[0]], ends[ids[0]]
        referenced += 1
        if mask is None:
            regions.append(data[id_start:id_end])
            continue
        if type(mask) is not tuple or not mask[1]:
            return None
        referenced += 1
        # A mask of 0s and 1s in json.dump's layout has 3 bytes per entry: its ones, then the padding zeros.
        mask_start, mask_end = starts[mask[0]], ends[mask[0]]
        total = (mask_end - mask_start + 2) // 3
        zero = find(b"0", mask_start, mask_end)
        ones = total if zero < 0 else (zero - mask_start) // 3
        if ones == 0 or 3 * total - 2 != mask_end - mask_start:
            return None
        key = (ones, total)
        if key not in mask_templates:
            mask_templates[key] = (b"1, " * ones + b"0, " * (total - ones))[:-2]
        if not startswith(mask_templates[key], mask_start):
            return None
        padding = total - ones
        if padding:
            if padding not in zero_tails:
                zero_tails[padding] = b", 0" * padding
            if not endswith(zero_tails[padding], id_start, id_end):
                return None
            id_end -= 3 * padding
            if id_end <= id_start:
                return None
        regions.append(data[id_start:id_end])
        real_lengths[number] = ones
    # A numeric array that is no session's ids or mask (another field, a duplicate key): json.loads's to read.
    if referenced != sum(numeric):
        return None
    if not all(numeric) and not _are_string_lists(_SEPARATOR.join(
            [data[start:end] for start, end, is_numeric in zip(starts, ends, numeric) if not is_numeric])):
        return None

    parsed = _parse_integers(_SEPARATOR.join(regions), len(str(max(settings.vocab_size - 1, 0))))
    if parsed is None:
        return None
    values, number_starts = parsed
    region_lengths = np.fromiter(map(len, regions), dtype=np.int64, count=len(regions))
    region_starts = np.concatenate([[0], np.cumsum(region_lengths[:-1] + len(_SEPARATOR))])
    first_numbers = np.searchsorted(number_starts, region_starts)
    counted = np.diff(np.append(first_numbers, len(values)))
    expected = np.asarray(real_lengths)
    if (expected[expected > 0] != counted[expected > 0]).any():  # a mask keeps exactly as many ids as its ones
        return None

    # The slow path's checks on real tokens (the masks are proven 1s-then-0s above); any failure is its to report.
    if values.max() >= settings.vocab_size:
        return None
    special = np.zeros(settings.vocab_size, dtype=bool)
    special[[i for i in SEED_SPECIAL_IDS.values() if i < settings.vocab_size]] = True
    if not np.logical_or.reduceat(~special[values], first_numbers).all():  # only [CLS]/[SEP]/[PAD]: empty
        return None
    too_long = np.flatnonzero(counted > settings.max_seq_length)
    if len(too_long):
        if not settings.truncate_long_sessions:
            return None
        values, counted = _truncate_sessions(values, counted, too_long, settings.max_seq_length)
    builder.kind = TOKEN_IDS_KIND
    builder.truncated = len(too_long)
    builder.records = list(range(1, len(sessions) + 1))
    return builder._session_table(values, counted), builder


def parse_session_file(path: str, settings: ParseSettings) -> tuple[pa.Table | None, _ShardBuilder]:
    """Read and validate one file. Returns its Arrow table (None when it holds no usable session)."""
    fast = _parse_token_json_fast(path, settings)
    if fast is not None:
        return fast
    builder = _ShardBuilder(path, settings)
    for item in iter_file_records(path, settings.skip_bad_records):
        if isinstance(item, Rejection):
            builder.rejected.append(item)
        else:
            builder.add(*item)
    return builder.table(), builder


# --------------------------------------------------------------------------------------------------------------------
# The per-file Arrow cache
# --------------------------------------------------------------------------------------------------------------------


def _shard_key(path: str, settings: ParseSettings) -> str:
    stat = os.stat(path)
    identity = {
        "version": CACHE_FORMAT_VERSION,
        "path": os.path.abspath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        **settings.as_dict(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _write_atomically(path: Path, write) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cached_shard(path: str, settings: ParseSettings, cache_root: Path) -> FileShard | None:
    """The up-to-date shard of `path` in the cache, or None."""
    shard_dir = cache_root / "shards"
    key = _shard_key(path, settings)
    arrow_path, meta_path = shard_dir / f"{key}.arrow", shard_dir / f"{key}.json"
    if not (meta_path.exists() and arrow_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    rejected = [Rejection(**r) for r in meta.pop("rejected")]
    return FileShard(**meta, rejected=rejected)


def build_shard(path: str, settings: ParseSettings, cache_root: Path, overwrite: bool = False) -> tuple[FileShard, bool]:
    """Parse `path` into the cache unless an up-to-date shard is there. Returns (shard, whether it was parsed)."""
    shard_dir = cache_root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    key = _shard_key(path, settings)
    arrow_path, meta_path = shard_dir / f"{key}.arrow", shard_dir / f"{key}.json"
    if not overwrite:
        cached = _cached_shard(path, settings, cache_root)
        if cached is not None:
            return cached, False

    table, builder = parse_session_file(path, settings)
    if table is None:
        table = pa.table({"input_ids": pa.array([], pa.list_(pa.int32()))})

    def write_arrow(tmp: str) -> None:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)

    def write_id_hashes(tmp: str) -> None:
        ids = table["session_id"] if "session_id" in table.column_names else pa.array([], pa.string())
        with open(tmp, "wb") as handle:
            np.save(handle, _session_id_hashes(ids))

    # The Arrow file first, its metadata last: a crash in between leaves no shard that looks complete.
    _write_atomically(arrow_path, write_arrow)
    _write_atomically(_id_hashes_path(arrow_path), write_id_hashes)
    meta = {
        "source": path,
        "arrow_path": str(arrow_path),
        "kind": builder.kind,
        "sessions": table.num_rows,
        "truncated": builder.truncated,
    }
    payload = json.dumps({**meta, "rejected": [json.loads(r.to_json()) for r in builder.rejected]})
    _write_atomically(meta_path, lambda tmp: Path(tmp).write_text(payload))
    return FileShard(**meta, rejected=builder.rejected), True


_next_job = None  # in a parsing worker: the shared index of the next file to parse (see build_shards)

# glibc's mallopt parameters. Setting one turns glibc's own adjustment of both off for the process, so afterwards
# they are set to what that adjustment reaches once large blocks have been freed (32 MB, and twice that).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_SETTLED_MMAP_THRESHOLD = 32 * 1024 * 1024


@contextlib.contextmanager
def _heap_reused_across_files():
    """Keep the memory of one file's buffers in the heap for the next file (glibc; elsewhere a no-op).

    A file's text and its arrays are tens of MB each. glibc serves allocations above its mmap threshold (at most
    32 MB unless set) with fresh mappings, and returns freed memory at the heap's top to the kernel beyond its trim
    threshold: each file then paid for the kernel to map and zero every page again. That was a quarter to a half of
    the CPU time of a parse (0.22-0.31 -> 0.15-0.20 CPU-s per 42 MB reference file; benchmarks/bench_parse.py).
    Afterwards the kept memory is released.
    """
    if platform.libc_ver()[0] != "glibc":
        yield
        return
    libc = ctypes.CDLL(None)
    # Older glibc refuses an mmap threshold above 32 MB (mallopt returns 0); then leave both alone rather
    # than freeze the threshold low.
    if not libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30):
        yield
        return
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:  # for the rest of the process (training, when it parsed too): glibc's usual values for large blocks
        libc.mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _SETTLED_MMAP_THRESHOLD)
        libc.malloc_trim(0)


def _share_job_counter(counter) -> None:
    global _next_job
    _next_job = counter


def _parse_claimed_files(jobs: list[tuple], counter=None) -> list[tuple[int, FileShard | DataError]]:
    """Parse the files of `jobs` that this process claims through the shared counter, until none is left.

    A DataError is returned, not raised, and stops every process from claiming more: the load fails anyway.
    """
    counter = counter if counter is not None else _next_job
    done: list[tuple[int, FileShard | DataError]] = []
    with _heap_reused_across_files():
        while True:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            if index >= len(jobs):
                return done
            try:
                done.append((index, build_shard(*jobs[index])[0]))
            except DataError as error:
                with counter.get_lock():
                    counter.value = len(jobs)
                done.append((index, error))
                return done


def build_shards(files: list[str], settings: ParseSettings, cache_root: Path, overwrite: bool = False,
                 num_workers: int | None = None) -> tuple[list[FileShard], int]:
    """Parse (or reuse) one shard per file, one file in memory at a time per worker. Returns (shards, parsed)."""
    shards: dict[int, FileShard | DataError] = {}
    if not overwrite:  # reusing the cache needs no worker: each new process costs seconds to import the package
        for index, path in enumerate(files):
            cached = _cached_shard(path, settings, cache_root)
            if cached is not None:
                shards[index] = cached
    to_parse = [index for index in range(len(files)) if index not in shards]
    jobs = [(files[index], settings, cache_root, overwrite) for index in to_parse]
    workers = min(num_workers or 1, len(jobs))
    if workers > 1:
        # This process parses too, so one process fewer is started. Files are claimed one at a time through a
        # shared counter: this process starts at once, the others only once they have imported the package.
        context = get_context("spawn")
        counter = context.Value("q", 0)
        with context.Pool(workers - 1, initializer=_share_job_counter, initargs=(counter,)) as pool:
            pending = [pool.apply_async(_parse_claimed_files, (jobs,)) for _ in range(workers - 1)]
            done = _parse_claimed_files(jobs, counter)
            if len(done) < len(jobs):  # the workers claimed some files: wait for them
                for result in pending:
                    done.extend(result.get())
    else:
        with _heap_reused_across_files():
            done = [(index, build_shard(*job)[0]) for index, job in enumerate(jobs)]
    errors = sorted((index, shard) for index, shard in done if isinstance(shard, DataError))
    if errors:  # the first bad file in file order, as a serial run would report it
        raise errors[0][1]
    shards.update((to_parse[index], shard) for index, shard in done)
    return [shards[index] for index in range(len(files))], len(to_parse)


# --------------------------------------------------------------------------------------------------------------------
# The corpus: shards -> train / validation datasets
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SessionCorpus:
    """Validated sessions, before tokenization. `kind` says whether they carry token ids or event IDs."""

    train: Dataset
    validation: Dataset | None
    kind: str
    train_files: list[str]
    validation_files: list[str]
    rejected: list[Rejection]
    truncated: int
    parsed_files: int
    cache_key: str

    def summary(self) -> dict[str, Any]:
        # Through Arrow: indexing the dataset gives a lazy column that numpy would read one value at a time.
        lengths = self.train.with_format("arrow")["length"].to_numpy() if len(self.train) else np.zeros(1)
        return {
            "kind": self.kind,
            "train_files": len(self.train_files),
            "validation_files": len(self.validation_files),
            "train_sessions": len(self.train),
            "validation_sessions": len(self.validation) if self.validation is not None else 0,
            "rejected_records": len(self.rejected),
            "truncated_sessions": self.truncated,
            "length_mean": float(lengths.mean()),
            "length_p50": float(np.percentile(lengths, 50)),
            "length_p95": float(np.percentile(lengths, 95)),
            "length_max": int(lengths.max()),
        }


def _datasets_of(shards: list[FileShard], dropped: dict[str, np.ndarray] | None = None) -> Dataset | None:
    """One dataset over the shards' Arrow files, without the rows in `dropped` (arrow path -> row indices)."""
    shards = [shard for shard in shards if shard.sessions]
    if not shards:
        return None
    # One memory-mapped table over all the files, and one Dataset: Dataset.from_file per shard hashes a fingerprint
    # for each (seconds for a few hundred files); the shard keys already identify the content.
    fingerprint = hashlib.sha256(json.dumps([Path(s.arrow_path).stem for s in shards]).encode()).hexdigest()[:32]
    dataset = Dataset(concat_tables([MemoryMappedTable.from_file(s.arrow_path) for s in shards]),
                      fingerprint=fingerprint)
    if dropped:
        keep = np.ones(len(dataset), dtype=bool)
        offset = 0
        for shard in shards:
            if shard.arrow_path in dropped:
                keep[offset + dropped[shard.arrow_path]] = False
            offset += shard.sessions
        dataset = dataset.select(np.flatnonzero(keep))
    return dataset if len(dataset) else None


def _read_shard_columns(shard: FileShard, columns: list[str]) -> pa.Table:
    with pa.memory_map(shard.arrow_path) as source:
        return pa.ipc.open_stream(source).read_all().select(columns)


def _session_id_hashes(session_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit FNV-1a hashes of the non-empty session ids, all ids at once (one numpy step per byte position).

    Equal ids hash equal; a collision of different ids only costs the exact check. The first and the last 64
    bytes and the length are hashed, which bounds the work for very long ids.
    """
    if isinstance(session_ids, pa.ChunkedArray):
        session_ids = session_ids.combine_chunks()
    if not len(session_ids):
        return np.zeros(0, dtype=np.uint64)
    offset_type = np.int64 if pa.types.is_large_string(session_ids.type) else np.int32
    offsets = np.frombuffer(session_ids.buffers()[1], dtype=offset_type)[session_ids.offset:
                                                                           session_ids.offset + len(session_ids) + 1]
    data = session_ids.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    starts, ends = offsets[:-1], offsets[1:]
    prime = np.uint64(0x100000001B3)
    hashes = (np.full(len(lengths), 0xCBF29CE484222325, dtype=np.uint64) ^ lengths.astype(np.uint64)) * prime
    for position in range(min(int(lengths.max()), 64)):
        inside = lengths > position
        for index in (starts + position, ends - 1 - position):
            byte = values[np.where(inside, index, 0)].astype(np.uint64)
            hashes = np.where(inside, (hashes ^ byte) * prime, hashes)
    return hashes[lengths > 0]


def _id_hashes_path(arrow_path: str | Path) -> Path:
    return Path(arrow_path).with_suffix(".ids.npy")


def _session_id_hashes_of(shard: FileShard) -> np.ndarray:
    """The shard's session-id hashes, written beside it when it was built (computed here for an older cache)."""
    path = _id_hashes_path(shard.arrow_path)
    if path.exists():
        return np.load(path)
    return _session_id_hashes(_read_shard_columns(shard, ["session_id"])["session_id"])


def find_duplicate_sessions(shards: list[FileShard], skip_bad_records: bool) -> tuple[dict[str, np.ndarray],
                                                                                      list[Rejection]]:
    """The same non-empty session_id twice in the corpus (one file or two) is an error naming both places.

    A duplicated session would be trained on twice, or sit in both training and validation and inflate the
    validation score. With `skip_bad_records` the first occurrence (in file order, then record order) is kept
    and the later ones are rejected. Returns ({arrow path: row indices to drop}, rejections).
    """
    hashes = [_session_id_hashes_of(shard) for shard in shards if shard.sessions]
    if hashes:  # all hashes different: no duplicate, without reading millions of ids
        hashes = np.sort(np.concatenate(hashes))
        if not (hashes[1:] == hashes[:-1]).any():
            return {}, []
    parts = []
    for index, shard in enumerate(shards):
        if not shard.sessions:
            continue
        table = _read_shard_columns(shard, ["session_id", "record"])
        parts.append(table.append_column("shard", pa.array(np.full(len(table), index, np.int32)))
                     .append_column("row", pa.array(np.arange(len(table), dtype=np.int64))))
    if not parts:
        return {}, []
    table = pa.concat_tables(parts)
    table = table.filter(pc.not_equal(table["session_id"], ""))
    counts = table.group_by("session_id").aggregate([("row", "count")])
    repeated = counts.filter(pc.greater(counts["row_count"], 1))["session_id"]
    if not len(repeated):
        return {}, []

    first_seen: dict[str, tuple[str, int]] = {}
    dropped: dict[str, list[int]] = {}
    rejected = []
    # filter() keeps the order of the concatenation: file order, then record order.
    for row in table.filter(pc.is_in(table["session_id"], value_set=repeated)).to_pylist():
        shard = shards[row["shard"]]
        session_id = row["session_id"]
        if session_id not in first_seen:
            first_seen[session_id] = (shard.source, row["record"])
            continue
        first_file, first_record = first_seen[session_id]
        reason = f"duplicate session_id {session_id!r}: already used by {first_file}: record {first_record}"
        rejection = Rejection(shard.source, row["record"], reason, {"session_id": session_id})
        if not skip_bad_records:
            raise DataError(rejection.message())
        rejected.append(rejection)
        dropped.setdefault(shard.arrow_path, []).append(row["row"])
    return {path: np.asarray(rows) for path, rows in dropped.items()}, rejected


def _corpus_kind(shards: list[FileShard]) -> str:
    kinds = {s.kind for s in shards if s.kind}
    if len(kinds) > 1:
        by_kind = {kind: next(s.source for s in shards if s.kind == kind) for kind in kinds}
        raise DataError(
            "the files mix formats: " + "; ".join(f"{path} has {kind}" for kind, path in by_kind.items())
            + ". Use files with 'token_ids' throughout, or event IDs throughout."
        )
    if not kinds:
        raise DataError("no usable session in: " + ", ".join(s.source for s in shards))
    return kinds.pop()


def load_corpus(data_args: DataArguments, vocab_size: int, seed: int) -> SessionCorpus:
    """Files -> validated, cached sessions split into train and validation.

    A second call over unchanged files reuses the Arrow cache without parsing; a changed or added file, or a
    changed setting that affects parsing, re-parses only that file. Session ids are checked for duplicates across
    all files (train and validation) on every call: that check reads only the cached `session_id` columns.
    """
    train_files, validation_files = resolve_data_files(data_args)
    if data_args.max_seq_length < 3:
        raise DataError(f"--max_seq_length {data_args.max_seq_length} is too short: a session needs [CLS], at least "
                        "one event and [SEP]")
    settings = ParseSettings(vocab_size, data_args.max_seq_length, data_args.truncate_long_sessions,
                             data_args.skip_bad_records)
    cache_root = data_args.cache_root()
    all_files = train_files + validation_files
    shards, parsed = build_shards(all_files, settings, cache_root, data_args.overwrite_cache,
                                  data_args.preprocessing_num_workers)
    logger.info("Session files: %d (%d parsed, %d from the Arrow cache in %s)", len(all_files), parsed,
                len(all_files) - parsed, cache_root)
    kind = _corpus_kind(shards)
    dropped, duplicates = find_duplicate_sessions(shards, data_args.skip_bad_records)
    train_shards, validation_shards = shards[: len(train_files)], shards[len(train_files):]

    if validation_shards:
        validation = _datasets_of(validation_shards, dropped)
    elif data_args.validation_split_percentage > 0 and data_args.validation_split == "chronological" \
            and len(train_shards) > 1:
        # Whole files at the end of the (name = time) order, so no future session leaks into training.
        count = max(1, math.ceil(len(train_shards) * data_args.validation_split_percentage / 100))
        count = min(count, len(train_shards) - 1)
        train_shards, validation_shards = train_shards[:-count], train_shards[-count:]
        validation = _datasets_of(validation_shards, dropped)
    else:
        validation = None
    train = _datasets_of(train_shards, dropped)
    if train is None:
        raise DataError("no usable training session in: " + ", ".join(s.source for s in train_shards))

    split = "files"
    if validation is None and data_args.validation_split_percentage > 0 and len(train) < 2:
        # Holding out the only session would leave nothing to train on.
        logger.warning("Only %d training session: no validation split is held out.", len(train))
    elif validation is None and data_args.validation_split_percentage > 0:
        fraction = data_args.validation_split_percentage / 100
        # At least one session held out, and at least one left to train on.
        held_out = min(len(train) - 1, max(1, math.ceil(len(train) * fraction)))
        if data_args.validation_split == "chronological":  # one file: its last sessions
            cut = len(train) - held_out
            train, validation = train.select(range(cut)), train.select(range(cut, len(train)))
            split = f"chronological-{fraction}"
        else:
            parts = train.train_test_split(test_size=held_out, seed=seed, shuffle=True)
            train, validation = parts["train"], parts["test"]
            split = f"random-{fraction}-{seed}"
    if data_args.max_train_samples is not None:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if validation is not None and data_args.max_eval_samples is not None:
        validation = validation.select(range(min(len(validation), data_args.max_eval_samples)))

    key_material = json.dumps({
        "train": [Path(s.arrow_path).stem for s in train_shards],
        "validation": [Path(s.arrow_path).stem for s in validation_shards],
        "split": split, "max_train": data_args.max_train_samples, "max_eval": data_args.max_eval_samples,
    })
    rejected = [r for s in shards for r in s.rejected] + duplicates
    return SessionCorpus(
        train=train,
        validation=validation,
        kind=kind,
        train_files=[s.source for s in train_shards],
        validation_files=[s.source for s in validation_shards],
        rejected=rejected,
        truncated=sum(s.truncated for s in shards),
        parsed_files=parsed,
        cache_key=hashlib.sha256(key_material.encode()).hexdigest()[:24],
    )


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


def tokenize_events(dataset: Dataset, tokenizer, max_seq_length: int, cache_file: Path | None = None,
                    overwrite: bool = False) -> Dataset:
    """Event-ID sessions -> `input_ids` ([CLS] events [SEP], cut to `max_seq_length`) and `length`."""
    vocab = tokenizer.get_vocab()
    unk, cls, sep = tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    keep = max_seq_length - 2

    def encode(batch: dict[str, list]) -> dict[str, list]:
        input_ids = [[cls, *(vocab.get(event, unk) for event in events[:keep]), sep] for events in batch["event_ids"]]
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}

    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
    return dataset.map(
        encode,
        batched=True,
        batch_size=10_000,
        remove_columns=[c for c in dataset.column_names if c not in ("label", "session_id")],
        cache_file_name=str(cache_file) if cache_file else None,
        load_from_cache_file=not overwrite,
        desc="Encoding event IDs",
    )


def model_inputs(dataset: Dataset) -> Dataset:
    """Only what the collator and the length-grouped sampler read."""
    return dataset.select_columns(["input_ids", "length"])
