#!/usr/bin/env python
"""Parsing accuracy of `logbert prepare` on Loghub's 2k samples, and its speed beside Drain3 alone.

    PYTHONPATH=. python benchmarks/bench_prepare.py --loghub-dir ../shared/data/loghub_2k --repeat 10

Accuracy is grouping accuracy (Zhu et al., "Tools and Benchmarks for Automated Log Parsing", ICSE-SEIP'19): a line
is parsed correctly when the set of lines sharing its predicted template equals the set sharing its ground-truth
template (`*_structured.csv`). Speed: CPU seconds of the whole prepare stage (read, header, Drain3, sessions,
files) against Drain3's TemplateMiner.add_log_message alone on the same lines, on the 2k file repeated --repeat
times; best of --runs. Drain3 alone is timed twice: on the header-parsed contents (its mining cost only; the
stricter baseline) and on the raw lines as they come. Reading the file and splitting the headers, and nothing
else, is timed too: the floor under any overhead of prepare.
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


def cpu_seconds(function, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loghub-dir", default="../shared/data/loghub_2k")
    parser.add_argument("--repeat", type=int, default=10, help="Copies of each 2k file timed for speed.")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name, preset in DATASETS.items():
            log_file = os.path.join(args.loghub_dir, f"{name}_2k.log")
            structured = os.path.join(work, f"{name}_structured.csv")
            settings = settings_for(preset, log_file, os.path.join(work, name), structured)
            summary = prepare_logs(settings)
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
            with open(big, encoding="utf-8") as handle:
                raw_lines = handle.read().splitlines()
            regex, _ = build_format_regex(settings.log_format)
            contents = [regex.match(line.strip()).group("Content") for line in raw_lines]

            def drain_alone(lines=contents, drain_settings=settings.drain):
                miner = build_template_miner(drain_settings)
                for line in lines:
                    miner.add_log_message(line)

            speed_settings = settings_for(preset, big, os.path.join(work, f"{name}_speed"))
            prepare_cpu = cpu_seconds(lambda s=speed_settings: prepare_logs(s), args.runs)
            # The floor of any overhead: reading the file and splitting each line's header, nothing else.
            read_cpu = cpu_seconds(lambda r=regex, f=big: sum(1 for _ in iter_parsed_lines([f], r, ReadStats())),
                                   args.runs)
            drain_cpu = cpu_seconds(drain_alone, args.runs)
            drain_raw_cpu = cpu_seconds(lambda lines=raw_lines: drain_alone(lines), args.runs)
            n = len(raw_lines)
            results[name] = {
                "grouping_accuracy": round(grouping_accuracy(truth, predicted), 4),
                "templates": summary["templates"], "truth_templates": len(set(truth)),
                "lines_timed": n,
                "prepare_lines_per_s": round(n / prepare_cpu), "drain3_lines_per_s": round(n / drain_cpu),
                "drain3_raw_lines_per_s": round(n / drain_raw_cpu),
                "overhead_vs_drain3": round(prepare_cpu / drain_cpu - 1, 3),
                "overhead_vs_drain3_raw": round(prepare_cpu / drain_raw_cpu - 1, 3),
                "read_and_split_lines_per_s": round(n / read_cpu),
                "read_and_split_vs_drain3": round(read_cpu / drain_cpu, 3),
            }
    print(json.dumps(results, indent=1))
    print(f"{'dataset':8} {'accuracy':>8} {'prepare/s':>10} {'drain3/s':>9} {'overhead':>8} {'read+split':>10}",
          file=sys.stderr)
    for name, r in results.items():
        print(f"{name:8} {r['grouping_accuracy']:8.4f} {r['prepare_lines_per_s']:10d} {r['drain3_lines_per_s']:9d} "
              f"{r['overhead_vs_drain3']:8.1%} {r['read_and_split_vs_drain3']:10.1%}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
