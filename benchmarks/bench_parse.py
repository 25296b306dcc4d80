#!/usr/bin/env python
"""CPU time to parse session files in one process, with and without the heap kept across files.

    PYTHONPATH=. python benchmarks/bench_parse.py --data-dir /tmp/logbert-corpus --max-files 16

Each file is read once first (so both runs read from the page cache), then parsed by `parse_session_file` in
two passes over the same files: with glibc's default allocation thresholds, and inside
`heap_reused_across_files` (what `build_shards` does). User and kernel CPU seconds per file are printed for both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from logbert.ingest import ParseSettings, parse_session_file
from logbert.ingest.glibc_heap import heap_reused_across_files


def parse_all(files: list[str], settings: ParseSettings, reuse_heap: bool) -> dict:
    before = os.times()
    with heap_reused_across_files() if reuse_heap else contextlib.nullcontext():
        for path in files:
            parse_session_file(path, settings)
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    return {"user_seconds_per_file": user / len(files), "system_seconds_per_file": system / len(files),
            "cpu_seconds_per_file": (user + system) / len(files)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="A corpus from generate_corpus.py.")
    parser.add_argument("--max-files", type=int, default=16)
    args = parser.parse_args(argv)
    files = sorted(str(p) for p in Path(args.data_dir).glob("*.json"))[: args.max_files]
    for path in files:
        Path(path).read_bytes()
    settings = ParseSettings(vocab_size=10000, max_seq_length=512, truncate_long_sessions=True,
                             skip_bad_records=False)
    results = {"files": len(files), "default_heap": parse_all(files, settings, reuse_heap=False),
               "heap_reused": parse_all(files, settings, reuse_heap=True)}
    print(json.dumps(results, indent=2))
    for name in ("default_heap", "heap_reused"):
        result = results[name]
        print(f"{name:14s} {result['cpu_seconds_per_file']:.3f} CPU-s per file "
              f"(user {result['user_seconds_per_file']:.3f},"
              f" kernel {result['system_seconds_per_file']:.3f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
