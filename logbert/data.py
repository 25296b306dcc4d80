"""The corpus: session files -> validated, Arrow-cached `datasets.Dataset`s, split into train and validation.

Reading, validating and caching one file is `logbert.ingest`'s; what a session is, `logbert.session`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.table import MemoryMappedTable, concat_tables

from .config import DataArguments
# Re-exported: the names other modules and scripts import from here.
from .ingest import (CACHE_FORMAT_VERSION, REJECTED_RECORDS_FILE, DataError, FileShard, ParseSettings,  # noqa: F401
                     Rejection, build_shard, build_shards, expand_data_files, iter_file_records, parse_session_file,
                     resolve_data_files, write_rejections)
from .session import EVENTS_KIND, SEED_SPECIAL_IDS, TOKEN_IDS_KIND  # noqa: F401

logger = logging.getLogger(__name__)


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


def find_duplicate_sessions(shards: list[FileShard], skip_bad_records: bool) -> tuple[dict[str, np.ndarray],
                                                                                      list[Rejection]]:
    """The same non-empty session_id twice in the corpus (one file or two) is an error naming both places.

    A duplicated session would be trained on twice, or sit in both training and validation and inflate the
    validation score. With `skip_bad_records` the first occurrence (in file order, then record order) is kept
    and the later ones are rejected. Returns ({arrow path: row indices to drop}, rejections).
    """
    with_sessions = [(index, shard) for index, shard in enumerate(shards) if shard.sessions]
    if not with_sessions:
        return {}, []
    # All ids at once through Arrow's hash kernels, from the memory-mapped columns (no Python object per id); it
    # replaces per-shard hash files written beside every shard. The common case, no duplicate, needs only
    # `unique`: 0.60-0.95 CPU-s for 2.46M ids in 286 shards (1.2-2.0 s wall on 2 cores at load average 10), and
    # 1.2-1.4 CPU-s with a duplicate (benchmarks/bench_duplicates.py). The chunks are passed one by one: handing
    # pa.chunked_array whole ChunkedArrays cost a second more.
    columns = [_read_shard_columns(shard, ["session_id", "record"]) for _, shard in with_sessions]
    ids = pa.chunked_array([chunk for c in columns for chunk in c["session_id"].chunks], pa.string())
    empty = pc.sum(pc.equal(pc.binary_length(ids), 0)).as_py() or 0
    if len(pc.unique(ids)) == len(ids) - empty + (1 if empty else 0):
        return {}, []
    counts = pc.value_counts(ids)
    repeated = counts.field("values").filter(pc.and_(pc.greater(counts.field("counts"), 1),
                                                     pc.not_equal(counts.field("values"), "")))
    parts = [table.append_column("shard", pa.array(np.full(len(table), index, np.int32)))
             .append_column("row", pa.array(np.arange(len(table), dtype=np.int64)))
             for (index, _), table in zip(with_sessions, columns)]
    table = pa.concat_tables(parts)

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




def tokenize_events(dataset: Dataset, tokenizer, max_seq_length: int, cache_file: Path | None = None,
                    overwrite: bool = False) -> Dataset:
    """Event-ID sessions -> `input_ids` ([CLS] events [SEP], cut to `max_seq_length`) and `length`.

    Dict look-ups rather than the fast tokenizer (`is_split_into_words=True`): measured side by side in one run
    (benchmarks/bench_encode.py, 50,000 HDFS-like sessions, 7.0M events, same `Dataset.map`, identical output),
    the look-ups took 2.19 and 2.25 CPU-s, the tokenizer 13.01 and 12.11 CPU-s.
    """
    vocab = tokenizer.get_vocab()
    unk, cls, sep = tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    keep = max_seq_length - 2

    def encode(batch: dict[str, list]) -> dict[str, list]:
        input_ids = [[cls, *(vocab.get(event, unk) for event in events[:keep]), sep] for events in batch["event_ids"]]
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}

    folder = cache_file.parent if cache_file is not None else None
    before = set(folder.glob("tmp*")) if folder is not None and folder.is_dir() else set()
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        return dataset.map(
            encode,
            batched=True,
            batch_size=10_000,
            remove_columns=[c for c in dataset.column_names if c not in ("label", "session_id")],
            cache_file_name=str(cache_file) if cache_file else None,
            load_from_cache_file=not overwrite,
            desc="Encoding event IDs",
        )
    except OSError as error:
        # datasets removes its temporary file on failure unless closing it fails too (disk full): remove it here.
        for tmp in set(folder.glob("tmp*")) - before if folder is not None and folder.is_dir() else ():
            tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the encoded-ids cache {cache_file}: {error.strerror or error} "
                        "(--data_cache_dir must be a writable folder with free space)") from None


def model_inputs(dataset: Dataset) -> Dataset:
    """Only what the collator and the length-grouped sampler read."""
    return dataset.select_columns(["input_ids", "length"])
