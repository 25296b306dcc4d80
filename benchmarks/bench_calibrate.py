#!/usr/bin/env python
"""Calibration with and without the masked rows, side by side: same model, same normal sessions, same thresholds?

    PYTHONPATH=. python benchmarks/bench_calibrate.py --model outputs/hdfs-s42/best_model \
        --normal ../shared/data/hdfs_deeplog/derived_normal_sample_7000 --sessions 3000

`logbert.calibration.calibrate` scores the normal sessions with `masked_scores=False` when the model's score reads
only the left-to-right rows and the end slot (next_max_nll, the default). This times both ways, alternating, best
of --repeats (the pipeline's cache is cleared before each pass), and prints both results, which must agree.
Nothing is written to the model folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import transformers

from logbert.calibration import calibrate
from logbert.cli import load_detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained LogBERT folder.")
    parser.add_argument("--normal", required=True, help="Event-ID text file of normal sessions, one per line.")
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--target-fpr", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    detector = load_detector(args.model, device="cpu")
    with open(args.normal, encoding="utf-8") as handle:
        sessions = [line.split() for line in handle if line.strip()][: args.sessions]
    seconds, settings = {}, {}
    for _ in range(args.repeats):
        for name, masked in (("with masked rows", True), ("verdict only (default)", False)):
            detector._cache.clear()
            started = time.perf_counter()
            settings[name] = calibrate(detector, sessions, args.target_fpr, masked_scores=masked)
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - started)
    keys = ("anomaly_threshold", "model_only_threshold", "threshold_method")
    print(json.dumps({name: {"seconds": round(seconds[name], 2), **{k: settings[name][k] for k in keys}}
                      for name in seconds}, indent=1))
    with_masked, verdict = seconds["with masked rows"], seconds["verdict only (default)"]
    print(f"{len(sessions)} sessions: {with_masked:.1f} s with the masked rows, {verdict:.1f} s verdict only "
          f"({with_masked / verdict:.2f}x)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
