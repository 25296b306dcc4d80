#!/usr/bin/env python
"""The duplicate session-id check (`logbert.data.find_duplicate_sessions`) at reference scale: 2.46M ids, 286 shards.

    PYTHONPATH=. python benchmarks/bench_duplicates.py

Writes 286 Arrow shards holding only the columns the check reads (session_id, record) with unique synthetic ids
like the reference's, then times the check from memory-mapped files: with no duplicate (every load), and with one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from logbert.data import FileShard, find_duplicate_sessions


def write_shards(folder: Path, sessions: int, files: int, duplicate: bool) -> list[FileShard]:
    shards = []
    for index, ids in enumerate(np.array_split(np.arange(sessions), files)):
        names = [f"session-{i:08d}-{(i * 2654435761) % 2**32:08x}" for i in ids]
        if duplicate and index == files - 1:
            names[-1] = "session-00000000-00000000"  # the first id of the first shard
        table = pa.table({"session_id": pa.array(names, pa.string()),
                          "record": pa.array(np.arange(1, len(ids) + 1), pa.int32())})
        path = folder / f"{index}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=10_000)
        shards.append(FileShard(f"day-{index}.json", str(path), "token_ids", len(ids), 0))
    return shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2_464_256)
    parser.add_argument("--files", type=int, default=286)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    for duplicate in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            shards = write_shards(Path(folder), args.sessions, args.files, duplicate)
            timings, cpu = [], []
            for _ in range(args.repeats):
                started, before = time.perf_counter(), os.times()
                _, rejected = find_duplicate_sessions(shards, skip_bad_records=True)
                after = os.times()
                timings.append(time.perf_counter() - started)
                cpu.append(after.user - before.user + after.system - before.system)
            assert len(rejected) == int(duplicate)
            results["one_duplicate" if duplicate else "no_duplicate"] = {
                "wall_seconds": [round(t, 3) for t in timings], "cpu_seconds": [round(t, 3) for t in cpu]}
    results["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"sessions": args.sessions, "files": args.files, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
