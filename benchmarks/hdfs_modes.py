#!/usr/bin/env python
"""HDFS ranking quality of linear against exhaustive scoring, and the model-alone threshold: tail fit vs quantile.

    PYTHONPATH=. python benchmarks/hdfs_modes.py --model outputs/logbert-hdfs/best_model \
        --train_file ../shared/data/hdfs_deeplog/hdfs_train --data-dir ../shared/data/hdfs_deeplog

Both modes score the same sessions with the same model: the test sessions (derived_normal_sample_7000 normal,
hdfs_test_abnormal anomalous) for AUROC/AUPRC, and the validation sessions that training held out (reproduced with
the run's config and seed) for the label-free threshold at --target-fpr, set by the empirical quantile and by the
tail fit; projected F1 counts FPR x 553,366 false positives (the full protocol's normal sessions).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import transformers
from sklearn.metrics import average_precision_score, roc_auc_score

from logbert.cli import load_detector
from logbert.config import parse_args
from logbert.data import load_corpus
from logbert.evaluation import detection_metrics
from logbert.scoring import calibrate_threshold
from logbert.tail_fit import tail_threshold

PROJECTED_NORMAL_COUNT = 553_366


def read_sessions(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def validation_sessions(config: str, train_file: str, seed: int) -> list[list[str]]:
    """The sessions run_mlm_logs.py held out for validation (and calibration) with this config and seed."""
    cache = tempfile.mkdtemp(prefix="logbert-hdfs-modes-")
    _, data_args, _, _ = parse_args(["--config", config, "--train_file", train_file, "--output_dir", cache,
                                     "--data_cache_dir", cache, "--seed", str(seed)])
    corpus = load_corpus(data_args, 10000, seed)
    rows = corpus.validation
    return [list(map(str, events)) for events, label in zip(rows["event_ids"], rows["label"]) if label != 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/hdfs.yaml")
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target-fpr", type=float, default=0.001)
    parser.add_argument("--modes", nargs="+", default=["linear", "exhaustive"])
    parser.add_argument("--next-event-window", type=int, default=None, help="Linear mode's window (model default).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.set_verbosity_error()

    data = Path(args.data_dir)
    normal, abnormal = read_sessions(data / "derived_normal_sample_7000"), read_sessions(data / "hdfs_test_abnormal")
    labels = np.array([0] * len(normal) + [1] * len(abnormal))
    validation = validation_sessions(args.config, args.train_file, args.seed)
    detector = load_detector(args.model, device="cpu")
    summary = {"model": args.model, "test_sessions": len(labels), "validation_sessions": len(validation)}
    for mode in args.modes:
        started = time.perf_counter()
        window = {"next_event_window": args.next_event_window} if args.next_event_window else {}
        test = detector(normal + abnormal, return_events=False, scoring_mode=mode, **window)
        seconds = time.perf_counter() - started
        held_out = detector(validation, return_events=False, scoring_mode=mode, known_normal_gate=False, **window)
        result = {"test_seconds": seconds}
        for name, key in (("model_alone", "model_score"), ("gated", "anomaly_score")):
            scores = np.array([r[key] for r in test])
            result[name] = {"auroc": roc_auc_score(labels, scores), "auprc": average_precision_score(labels, scores)}
        model_scores = np.array([r["model_score"] for r in test])
        validation_scores = np.array([r["model_score"] for r in held_out if r["num_unseen"] == 0])
        thresholds = {"empirical": calibrate_threshold(validation_scores, args.target_fpr)}
        fit = tail_threshold(validation_scores, args.target_fpr)
        thresholds[f"tail ({fit['threshold_method']})"] = fit["threshold"]
        result["tail_fit"] = fit["tail_fit"]
        # The fit as it comes, even where its checks reject it: what the fallback avoided.
        forced = tail_threshold(validation_scores, args.target_fpr, min_ks_pvalue=0.0, max_shape=float("inf"))
        thresholds["tail (fit kept whatever its checks say)"] = forced["threshold"]
        for method, threshold in thresholds.items():
            metrics = detection_metrics(model_scores, labels, threshold, PROJECTED_NORMAL_COUNT)
            result["model_alone"][f"threshold_{method}"] = {
                "threshold": threshold, **{k: metrics[k] for k in ("precision", "recall", "fpr", "f1", "projected_f1")}}
        summary[mode] = result
        print(json.dumps({mode: result}, indent=2, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
