#!/usr/bin/env python
"""Parsing accuracy of `logbert prepare` on Loghub's 2k samples, and its speed beside Drain3 alone.

    PYTHONPATH=. python benchmarks/bench_prepare.py --loghub-dir ../shared/data/loghub_2k --repeat 50

Accuracy is grouping accuracy (Zhu et al., "Tools and Benchmarks for Automated Log Parsing", ICSE-SEIP'19): a line
is parsed correctly when the set of lines sharing its predicted template equals the set sharing its ground-truth
template (`*_structured.csv`). Speed, wall clock on the 2k file repeated --repeat times, best of --runs:
the whole prepare stage (read, header, Drain3, sessions, files) with Drain3 in a second process (the default on
two cores) and in one process, against Drain3's TemplateMiner.add_log_message alone on the same lines. Drain3
alone is timed twice: on the header-parsed contents (its mining cost only; the stricter baseline) and on the raw
lines as they come. The CPU seconds of both processes are printed too, and reading the file and splitting the
headers alone, the floor of any overhead in one process. Run it on a quiet machine with two free cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace

from logbert.prepare.cli import build_prepare_parser, resolve_prepare_settings
from logbert.prepare.reading import ReadStats, build_format_regex, iter_parsed_lines
from logbert.prepare.run import prepare_logs
from logbert.prepare.templates import build_template_miner

DATASETS = {"HDFS": "hdfs", "BGL": "bgl"}


def grouping_accuracy(truth: list[str], predicted: list[str]) -> float:
    """Share of lines whose predicted group is exactly their ground-truth group."""
    truth_groups, predicted_groups = defaultdict(set), defaultdict(set)
    for line, (t, p) in enumerate(zip(truth, predicted)):
        truth_groups[t].add(line)
        predicted_groups[p].add(line)
    correct = sum(len(lines) for lines in predicted_groups.values()
                  if truth_groups[truth[next(iter(lines))]] == lines)
    return correct / len(truth)


def event_column(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row["EventId"] for row in csv.DictReader(handle)]


def settings_for(preset: str, log_file: str, output_dir: str, structured: str | None = None):
    argv = ["--preset", preset, "--input", log_file, "--output_dir", output_dir, "--no_progress"]
    if structured:
        argv += ["--structured_csv", structured]
    return resolve_prepare_settings(build_prepare_parser().parse_args(argv))


def timed(function, runs: int) -> dict:
    """Best wall-clock seconds of `runs` calls, and the CPU seconds of this process and its children in that call."""
    best = None
    for _ in range(runs):
        before, started = os.times(), time.perf_counter()
        function()
        wall, after = time.perf_counter() - started, os.times()
        cpu = sum(after[i] - before[i] for i in range(4))  # user, system, children's user, children's system
        if best is None or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu}
    return best


def speed(preset: str, log_file: str, work: str, runs: int) -> dict:
    """Lines/s of prepare (Drain3 in a second process, and in one), of Drain3 alone, and of reading alone."""
    settings = settings_for(preset, log_file, os.path.join(work, "speed"))
    with open(log_file, encoding="utf-8") as handle:
        raw_lines = [line for line in handle.read().splitlines() if line.strip()]
    regex, _ = build_format_regex(settings.log_format)
    contents = [match.group("Content") for line in raw_lines if (match := regex.match(line.strip()))]

    def drain_alone(lines=contents):
        miner = build_template_miner(settings.drain)
        for line in lines:
            miner.add_log_message(line)

    background = timed(lambda: prepare_logs(replace(settings, background_mining=True)), runs)
    inline = timed(lambda: prepare_logs(replace(settings, background_mining=False)), runs)
    # The floor of any single-process overhead: reading the file and splitting each header, nothing else.
    read = timed(lambda: sum(1 for _ in iter_parsed_lines([log_file], regex, ReadStats())), runs)
    drain = timed(drain_alone, runs)
    drain_raw = timed(lambda: drain_alone(raw_lines), runs)
    n = len(raw_lines)
    return {
        "lines_timed": n,
        "prepare_lines_per_s": round(n / background["wall"]),
        "prepare_cpu_seconds_both_processes": round(background["cpu"], 3),
        "prepare_one_process_lines_per_s": round(n / inline["wall"]),
        "drain3_lines_per_s": round(n / drain["wall"]), "drain3_raw_lines_per_s": round(n / drain_raw["wall"]),
        "overhead_vs_drain3": round(background["wall"] / drain["wall"] - 1, 3),
        "overhead_vs_drain3_raw": round(background["wall"] / drain_raw["wall"] - 1, 3),
        "one_process_overhead_vs_drain3": round(inline["wall"] / drain["wall"] - 1, 3),
        "cpu_overhead_vs_drain3": round(background["cpu"] / drain["cpu"] - 1, 3),
        "read_and_split_vs_drain3": round(read["cpu"] / drain["cpu"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loghub-dir", default="../shared/data/loghub_2k")
    parser.add_argument("--repeat", type=int, default=50, help="Copies of each 2k file timed for speed.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--speed-log", action="append", default=[], metavar="PRESET=FILE",
                        help="Also time prepare on this log (e.g. hdfs=/tmp/hdfs-raw/hdfs_train.log from "
                             "render_hdfs_logs.py: consecutive lines, as a real log has them).")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name, preset in DATASETS.items():
            log_file = os.path.join(args.loghub_dir, f"{name}_2k.log")
            structured = os.path.join(work, f"{name}_structured.csv")
            summary = prepare_logs(settings_for(preset, log_file, os.path.join(work, name), structured))
            truth = event_column(log_file + "_structured.csv")
            predicted = event_column(structured)
            if len(truth) != len(predicted):
                raise SystemExit(f"{name}: {len(predicted)} parsed lines, ground truth has {len(truth)}")
            big = os.path.join(work, f"{name}_x{args.repeat}.log")
            with open(log_file, "rb") as source:
                data = source.read()
            data += b"" if data.endswith(b"\n") else b"\n"  # BGL_2k.log has no final newline
            with open(big, "wb") as out:
                out.write(data * args.repeat)
            results[name] = {"grouping_accuracy": round(grouping_accuracy(truth, predicted), 4),
                             "templates": summary["templates"], "truth_templates": len(set(truth)),
                             **speed(preset, big, work, args.runs)}
        for option in args.speed_log:
            preset, _, log_file = option.partition("=")
            results[os.path.basename(log_file)] = {"grouping_accuracy": float("nan"),
                                                   **speed(preset, log_file, work, args.runs)}
    print(json.dumps(results, indent=1))
    print(f"{'dataset':8} {'accuracy':>8} {'prepare/s':>10} {'1-process/s':>11} {'drain3/s':>9} {'overhead':>8} "
          f"{'1-process':>9} {'raw-line':>8} {'read+split':>10}", file=sys.stderr)
    for name, r in results.items():
        print(f"{name:8} {r['grouping_accuracy']:8.4f} {r['prepare_lines_per_s']:10d} "
              f"{r['prepare_one_process_lines_per_s']:11d} {r['drain3_lines_per_s']:9d} {r['overhead_vs_drain3']:8.1%} "
              f"{r['one_process_overhead_vs_drain3']:9.1%} {r['overhead_vs_drain3_raw']:8.1%} "
              f"{r['read_and_split_vs_drain3']:10.1%}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
