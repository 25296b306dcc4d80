#!/usr/bin/env python
"""Data preparation: session JSON files -> Arrow cache with `logbert.data.load_corpus`, cold and reopened.

    PYTHONPATH=. python benchmarks/generate_corpus.py --output-dir /tmp/logbert-corpus
    PYTHONPATH=. python benchmarks/bench_data.py --data-dir /tmp/logbert-corpus --workers 2

Each measurement runs `load_corpus` in a fresh process (interpreter and imports not timed) with the reference
settings (max_seq_length 512, vocab 10,000, chronological 2% validation): first with an empty cache (every file
parsed), then again over the unchanged files (every shard reused: the "reopen"). Peak memory is the resident
memory of the whole process tree (the loading process and its parsing workers), sampled every 20 ms. CPU
seconds are counted too: on a shared machine wall-clock time depends on the other load, CPU time much less,
and sessions per CPU-second times the cores gives what dedicated cores would do.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

from logbert.config import DataArguments

VOCAB_SIZE = 10000
TARGETS = {"sessions_per_second": 100_000, "peak_rss_mb": 2048, "reopen_seconds": 5.0}


def data_arguments(args: argparse.Namespace) -> DataArguments:
    return DataArguments(
        data_dir=args.data_dir,
        data_cache_dir=args.cache_dir,
        max_seq_length=512,
        validation_split="chronological",
        validation_split_percentage=2,
        preprocessing_num_workers=args.workers,
    )


def _load_in_child(args: argparse.Namespace, results) -> None:
    """Runs in a fresh process: time one `load_corpus` call, and report what it did."""
    from logbert import data
    from logbert.ingest import cache

    if args.slow_path:  # the parser before the fast path, for comparison (in-process workers only)
        cache.parse_token_json_fast = lambda path, settings: None
    data_args = data_arguments(args)
    if args.max_files:
        files = sorted(str(p) for p in Path(args.data_dir).glob("*.json"))[: args.max_files]
        data_args.data_dir, data_args.train_file = None, files
    before = os.times()
    started = time.perf_counter()
    corpus = data.load_corpus(data_args, VOCAB_SIZE, seed=0)
    seconds = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system) + \
        (after.children_user - before.children_user) + (after.children_system - before.children_system)
    results.put({
        "seconds": seconds,
        "cpu_seconds": cpu,
        "parsed_files": corpus.parsed_files,
        "files": len(corpus.train_files) + len(corpus.validation_files),
        "sessions": len(corpus.train) + (len(corpus.validation) if corpus.validation is not None else 0),
        "train_sessions": len(corpus.train),
        "rejected": len(corpus.rejected),
        "truncated": corpus.truncated,
        "max_rss_mb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_rss_mb_one_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    })


def run_measured(args: argparse.Namespace) -> dict:
    """`_load_in_child` in a new process, with the peak resident memory of its process tree."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_load_in_child, args=(args, results))
    load_before = os.getloadavg()[0]
    child.start()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        process = psutil.Process(child.pid)
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = results.get()
    child.join()
    done.set()
    sampler.join()
    if child.exitcode:
        raise SystemExit(f"load_corpus failed (exit code {child.exitcode})")
    return {**result, "peak_rss_mb": peak / 2**20, "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="A corpus from generate_corpus.py.")
    parser.add_argument("--cache-dir", default="/tmp/logbert-bench-cache", help="Arrow cache (emptied first).")
    parser.add_argument("--workers", type=int, default=2, help="preprocessing_num_workers.")
    parser.add_argument("--max-files", type=int, default=None, help="Only the first N files (a quick run).")
    parser.add_argument("--slow-path", action="store_true",
                        help="Disable the fast JSON path (for comparison; use with --workers 1).")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="Cores, for the per-core figures.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shutil.rmtree(args.cache_dir, ignore_errors=True)
    files = sorted(Path(args.data_dir).glob("*.json"))[: args.max_files]
    input_bytes = sum(f.stat().st_size for f in files)

    cold = run_measured(args)
    reopen = run_measured(args)
    assert reopen["parsed_files"] == 0, "the second run should reuse every shard"
    sessions = cold["sessions"]
    cache_bytes = sum(f.stat().st_size for f in Path(args.cache_dir).rglob("*") if f.is_file())
    result = {
        "data_dir": args.data_dir,
        "files": cold["files"],
        "sessions": sessions,
        "input_gb": round(input_bytes / 1e9, 3),
        "cache_gb": round(cache_bytes / 1e9, 3),
        "workers": args.workers,
        "fast_path": not args.slow_path,
        "cold_seconds": round(cold["seconds"], 2),
        "sessions_per_second": round(sessions / cold["seconds"]),
        "mb_per_second": round(input_bytes / 1e6 / cold["seconds"], 1),
        "cpu_seconds": round(cold["cpu_seconds"], 1),
        "sessions_per_cpu_second": round(sessions / cold["cpu_seconds"]),
        "sessions_per_second_on_dedicated_cores": round(sessions / cold["cpu_seconds"] * min(args.cores,
                                                                                               args.workers or 1)),
        "peak_rss_mb": round(cold["peak_rss_mb"]),
        "max_rss_mb_one_process": round(max(cold["max_rss_mb_self"], cold["max_rss_mb_one_worker"])),
        "reopen_seconds": round(reopen["seconds"], 2),
        "reopen_peak_rss_mb": round(reopen["peak_rss_mb"]),
        "rejected": cold["rejected"],
        "truncated": cold["truncated"],
        "load_average": [round(cold["load_average_before"], 1), round(reopen["load_average_after"], 1)],
        "cpus": os.cpu_count(),
    }
    result["targets_met"] = {
        "sessions_per_second": result["sessions_per_second"] >= TARGETS["sessions_per_second"],
        "peak_rss_mb": result["peak_rss_mb"] < TARGETS["peak_rss_mb"],
        "reopen_seconds": result["reopen_seconds"] < TARGETS["reopen_seconds"],
    }
    print(json.dumps(result, indent=2))
    rows = [("sessions/s (wall)", result["sessions_per_second"], ">= 100000"),
            ("sessions/s per dedicated cores (CPU time)", result["sessions_per_second_on_dedicated_cores"], ""),
            ("MB/s", result["mb_per_second"], ""),
            ("peak RSS MB (process tree)", result["peak_rss_mb"], "< 2048"),
            ("reopen s", result["reopen_seconds"], "< 5")]
    print("\n" + "\n".join(f"{name:44s} {value:>12} {target}" for name, value, target in rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
