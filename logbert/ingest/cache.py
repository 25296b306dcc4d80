"""The per-file Arrow shard cache: one shard per input file, parsed by a pool of worker processes when needed."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa

from .fast_json import parse_token_json_fast
from .glibc_heap import heap_reused_across_files, keep_heap_in_worker
from .records import DataError, Rejection
from .validate import ParsedFile, ParseSettings, parse_records

# Bump when the shard layout or the validation rules change: old caches are then rebuilt, never misread.
CACHE_FORMAT_VERSION = 4
# A temporary file not written to for this long belongs to a build that was killed: a live writer touches its
# file many times a second, so two runs sharing one cache never remove each other's files.
STALE_TEMPORARY_SECONDS = 600


@dataclass
class FileShard:
    """One input file parsed into one Arrow file in the cache."""

    source: str
    arrow_path: str
    kind: str | None  # None for a file with no usable session
    sessions: int
    truncated: int
    rejected: list[Rejection] = field(default_factory=list)


def parse_session_file(path: str, settings: ParseSettings) -> ParsedFile:
    """Read and validate one file: the fast path when it can vouch for the result, else the slow path."""
    fast = parse_token_json_fast(path, settings)
    return fast if fast is not None else parse_records(path, settings)


def _shard_key(path: str, settings: ParseSettings) -> str:
    """What identifies a file's content without reading it.

    Size and mtime alone miss a same-size rewrite or a swapped file whose mtime was put back (`touch -r`); the
    inode changes when a file is replaced, and the change time cannot be set back. A content hash was measured
    instead: reading and hashing a 42 MB reference file costs 0.041 (crc32) to 0.107 (md5) CPU-s, against
    0.16 CPU-s to build its shard (glibc_heap.py), i.e. over 25% of a build, not the 5% allowed, and every warm
    load would read the whole corpus again.
    """
    stat = os.stat(path)
    identity = {
        "version": CACHE_FORMAT_VERSION,
        "path": os.path.abspath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
        **settings.as_dict(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _cache_write_error(path: Path, error: OSError) -> DataError:
    return DataError(f"cannot write the data cache file {path}: {error.strerror or error} (--data_cache_dir must be "
                     "a writable folder with free space)")


def write_atomically(path: Path, write) -> None:
    """`write(temporary path)`, then rename it to `path`. Any OSError is a DataError, and leaves no file behind.

    The temporary file is created with mode 0666 less the umask, as `open` would (mkstemp would make it 0600).
    """
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise _cache_write_error(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporary_files(folder: Path) -> int:
    """Remove the temporary files a killed build left in `folder`. Returns how many were removed."""
    removed = 0
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for tmp in folder.glob("*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # its writer renamed it, or another run removed it
            continue
        except OSError:  # a read-only cache: nothing to clean, and nothing will be written there
            break
    return removed


def _shard_paths(path: str, settings: ParseSettings, cache_root: Path) -> tuple[Path, Path]:
    shard_dir = cache_root / "shards"
    key = _shard_key(path, settings)
    return shard_dir / f"{key}.arrow", shard_dir / f"{key}.json"


def _cached_shard(path: str, settings: ParseSettings, cache_root: Path) -> FileShard | None:
    """The up-to-date shard of `path` in the cache, or None.

    The metadata holds no path: the Arrow file is found beside it, and the source is the file asked for, so a
    cache copied or moved elsewhere reads its own files.
    """
    arrow_path, meta_path = _shard_paths(path, settings, cache_root)
    if not (meta_path.exists() and arrow_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    rejected = [Rejection(path, **r) for r in meta["rejected"]]
    return FileShard(path, str(arrow_path), meta["kind"], meta["sessions"], meta["truncated"], rejected)


def build_shard(path: str, settings: ParseSettings, cache_root: Path,
                overwrite: bool = False) -> tuple[FileShard, bool]:
    """Parse `path` into the cache unless an up-to-date shard is there. Returns (shard, whether it was parsed)."""
    arrow_path, meta_path = _shard_paths(path, settings, cache_root)
    if not overwrite:
        cached = _cached_shard(path, settings, cache_root)
        if cached is not None:
            return cached, False
    try:
        arrow_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cache_write_error(arrow_path.parent, error) from None

    parsed = parse_session_file(path, settings)
    table = parsed.table if parsed.table is not None else pa.table({"input_ids": pa.array([], pa.list_(pa.int32()))})

    def write_arrow(tmp: str) -> None:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)

    # The Arrow file first, its metadata last: a crash in between leaves no shard that looks complete.
    write_atomically(arrow_path, write_arrow)
    rejected = [{"record": r.record, "reason": r.reason, "content": json.loads(r.to_json())["content"]}
                for r in parsed.rejected]
    payload = json.dumps({"kind": parsed.kind, "sessions": table.num_rows, "truncated": parsed.truncated,
                          "rejected": rejected})
    write_atomically(meta_path, lambda tmp: Path(tmp).write_text(payload))
    return FileShard(path, str(arrow_path), parsed.kind, table.num_rows, parsed.truncated, parsed.rejected), True


def _parse_with_workers(jobs: list[tuple[int, tuple]], workers: int) -> tuple[dict[int, FileShard],
                                                                            list[tuple[int, BaseException]]]:
    """`build_shard(*job)` for every (index, job), in `workers - 1` spawned processes and this one.

    This process parses too, so one process fewer is started, and it starts at once while the others import (a
    spawned process imports the main script: seconds for run_mlm_logs.py). The pool is kept two files deep per
    worker; whenever it is that full, this process parses the next file itself. After a bad file no more are
    started (the load fails anyway) except earlier ones, so that the error is the first in file order.
    Returns ({index: shard}, [(index, error)]).
    """
    queue = deque(jobs)
    parsed: dict[int, FileShard] = {}
    errors: list[tuple[int, BaseException]] = []
    running = {}
    # Spawned, not forked: a fork of a process holding datasets' and torch's threads can deadlock.
    with ProcessPoolExecutor(workers - 1, mp_context=get_context("spawn"), initializer=keep_heap_in_worker) as pool, \
            heap_reused_across_files():
        while queue and not errors:
            while queue and len(running) < 2 * (workers - 1):
                index, job = queue.popleft()
                running[pool.submit(build_shard, *job)] = index
            if queue:
                index, job = queue.popleft()
                try:
                    parsed[index] = build_shard(*job)[0]
                except DataError as error:
                    errors.append((index, error))
            for future in [future for future in running if future.done()]:
                index = running.pop(future)
                if future.exception() is not None:
                    errors.append((index, future.exception()))
                else:
                    parsed[index] = future.result()[0]
        for future, index in running.items():
            if errors and index > min(errors, key=lambda error: error[0])[0]:  # an earlier file may fail first
                future.cancel()
            if future.cancelled():
                continue
            if future.exception() is not None:  # waits for the file to finish
                errors.append((index, future.exception()))
            else:
                parsed[index] = future.result()[0]
    return parsed, errors


def build_shards(files: list[str], settings: ParseSettings, cache_root: Path, overwrite: bool = False,
                 num_workers: int | None = None) -> tuple[list[FileShard], int]:
    """Parse (or reuse) one shard per file, one file in memory at a time per worker. Returns (shards, parsed)."""
    shards: dict[int, FileShard] = {}
    if not overwrite:  # reusing the cache needs no worker: each new process costs seconds to import the package
        for index, path in enumerate(files):
            cached = _cached_shard(path, settings, cache_root)
            if cached is not None:
                shards[index] = cached
    to_parse = [index for index in range(len(files)) if index not in shards]
    if to_parse and (cache_root / "shards").is_dir():
        remove_stale_temporary_files(cache_root / "shards")
    jobs = [(index, (files[index], settings, cache_root, overwrite)) for index in to_parse]
    workers = min(num_workers or 1, len(jobs))
    if workers > 1:
        parsed, errors = _parse_with_workers(jobs, workers)
    else:
        parsed, errors = {}, []
        with heap_reused_across_files():
            for index, job in jobs:
                parsed[index] = build_shard(*job)[0]
    if errors:  # the first bad file in file order, as a serial run would report it
        raise min(errors, key=lambda error: error[0])[1]
    shards.update(parsed)
    return [shards[index] for index in range(len(files))], len(to_parse)
