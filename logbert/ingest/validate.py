"""Validating one file's records (through `logbert.session`) into the columns of its Arrow shard: the slow path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..session import TOKEN_IDS_KIND, SessionError, normalize_session, session_kind
from .records import DataError, Rejection, iter_file_records


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
class ParsedFile:
    """One file's sessions as an Arrow table (None when it holds no usable session), and what was left out."""

    table: pa.Table | None
    kind: str | None  # TOKEN_IDS_KIND or EVENTS_KIND; None when no record was valid
    truncated: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def truncate_sessions(kept: np.ndarray, lengths: np.ndarray, too_long: np.ndarray,
                      max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the sessions `too_long` of the concatenated token ids `kept` to max_seq_length, keeping the final token."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    drop = np.zeros(len(kept), dtype=bool)
    for record in too_long:
        drop[offsets[record] + max_seq_length - 1: offsets[record + 1] - 1] = True  # keep the final [SEP]
    return kept[~drop], np.minimum(lengths, max_seq_length)


def token_session_table(kept: np.ndarray, lengths: np.ndarray, session_ids: list[str], labels: list[int],
                        records: list[int]) -> pa.Table:
    """A token-id shard's columns from the real (unpadded) token ids of all sessions, concatenated."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(kept, pa.int32())),
        "length": pa.array(lengths, pa.int32()),
        "session_id": pa.array(session_ids, pa.string()),
        "label": pa.array(labels, pa.int8()),
        "record": pa.array(records, pa.int32()),
    })


class _ShardBuilder:
    """Collects the valid records of one file into columns, and the invalid ones as Rejections."""

    def __init__(self, path: str, settings: ParseSettings):
        self.path = path
        self.settings = settings
        self.kind: str | None = None  # set by the first valid record: one bad first record must not decide it
        self.session_ids: list[str] = []
        self.labels: list[int] = []
        self.records: list[int] = []
        self.sequences: list[list] = []  # real token ids (token_ids kind) or event strings (events kind)
        self.rejected: list[Rejection] = []
        self.truncated = 0

    def reject(self, number: int | None, reason: str, content: Any = None) -> None:
        rejection = Rejection(self.path, number, reason, content)
        if not self.settings.skip_bad_records:
            raise DataError(rejection.message())
        self.rejected.append(rejection)

    def add(self, number: int, record: Any) -> None:
        # A JSON record must be an object; a tuple is a line of the event-ID text format (see iter_file_records).
        if not isinstance(record, (dict, tuple)):
            return self.reject(
                number, f"expected a session object with 'token_ids' or 'event_sequence', got {type(record).__name__}",
                record)
        kind = session_kind(record)
        if kind is not None and self.kind is not None and kind != self.kind:
            expected = "'token_ids'" if self.kind == TOKEN_IDS_KIND else "'event_sequence' without 'token_ids'"
            return self.reject(number, f"mixed formats: earlier records have {expected}, this one does not", record)
        try:
            session = normalize_session(record, vocab_size=self.settings.vocab_size)
        except SessionError as error:
            return self.reject(number, error.reason, record)
        self.kind = session.kind
        self.sequences.append(session.token_ids if session.kind == TOKEN_IDS_KIND else session.events)
        self.session_ids.append(session.session_id)
        self.labels.append(session.label)
        self.records.append(number)

    def _reject_too_long(self, too_long: np.ndarray, describe) -> None:
        """Raise for the first over-long session, or (skip_bad_records) quarantine them all."""
        if not self.settings.skip_bad_records:
            first = int(too_long[0])
            raise DataError(f"{self.path}: record {self.records[first]}: {describe(first)}")
        for i in too_long:
            content = {"token_ids" if self.kind == TOKEN_IDS_KIND else "event_sequence": self.sequences[i]}
            self.rejected.append(Rejection(self.path, self.records[i], describe(i), content))
        keep = np.ones(len(self.sequences), dtype=bool)
        keep[too_long] = False
        for name in ("session_ids", "labels", "records", "sequences"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in np.flatnonzero(keep)])

    def _token_table(self) -> pa.Table | None:
        settings = self.settings
        lengths = np.fromiter(map(len, self.sequences), dtype=np.int64, count=len(self.sequences))
        too_long = np.flatnonzero(lengths > settings.max_seq_length)
        if len(too_long) and not settings.truncate_long_sessions:
            self._reject_too_long(too_long, lambda i: f"session has {len(self.sequences[i])} tokens, more than "
                                  f"max_seq_length {settings.max_seq_length} (--truncate_long_sessions cuts it)")
            return self.table()
        kept = pa.array(self.sequences, pa.list_(pa.int64())).values.to_numpy()
        if len(too_long):
            kept, lengths = truncate_sessions(kept, lengths, too_long, settings.max_seq_length)
            self.truncated += len(too_long)
        return token_session_table(kept, lengths, self.session_ids, self.labels, self.records)

    def _event_table(self) -> pa.Table | None:
        limit = self.settings.max_seq_length - 2  # [CLS] and [SEP] take two of the positions
        lengths = np.fromiter(map(len, self.sequences), dtype=np.int64, count=len(self.sequences))
        too_long = np.flatnonzero(lengths > limit)
        if len(too_long) and not self.settings.truncate_long_sessions:
            self._reject_too_long(too_long, lambda i: f"session has {len(self.sequences[i])} events, more than "
                                  f"max_seq_length {self.settings.max_seq_length} - 2 ([CLS] and [SEP]) "
                                  "(--truncate_long_sessions cuts it)")
            return self.table()
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


def parse_records(path: str, settings: ParseSettings) -> ParsedFile:
    """The slow path: every record of `path` through `normalize_session`, rejected or raised as the settings say."""
    builder = _ShardBuilder(path, settings)
    for item in iter_file_records(path, settings.skip_bad_records):
        if isinstance(item, Rejection):
            builder.rejected.append(item)
        else:
            builder.add(*item)
    table = builder.table()
    return ParsedFile(table, builder.kind, builder.truncated, builder.rejected)
