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
from logbert.calibration import calibrate
from logbert.scoring import calibrate_threshold
from logbert.tail_fit import tail_threshold

PROJECTED_NORMAL_COUNT = 553_366


def read_sessions(path: Path) -> list[list[str]]:
    """The sessions of a DeepLog-style file: one line of space-separated event IDs each, blank lines skipped."""
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def validation_sessions(config: str, train_file: str, seed: int, percentage: int | None = None) -> list[list[str]]:
    """The sessions run_mlm_logs.py held out for validation (and calibration) with this config and seed (and
    `--validation_split_percentage percentage`, when the run was given one)."""
    cache = tempfile.mkdtemp(prefix="logbert-hdfs-modes-")
    override = ["--validation_split_percentage", str(percentage)] if percentage is not None else []
    data_args = parse_args(["--config", config, "--train_file", train_file, "--output_dir", cache,
                            "--data_cache_dir", cache, "--seed", str(seed), *override]).data
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
    parser.add_argument("--validation-split-percentage", type=int, default=None,
                        help="The run's --validation_split_percentage, when it overrode the config's.")
    parser.add_argument("--target-fpr", type=float, default=0.001)
    parser.add_argument("--modes", nargs="+", default=["linear", "exhaustive"])
    parser.add_argument("--next-event-window", type=int, nargs="+", default=None,
                        help="Linear mode's windows to compare (default: the model's).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.set_verbosity_error()

    data = Path(args.data_dir)
    normal, abnormal = read_sessions(data / "derived_normal_sample_7000"), read_sessions(data / "hdfs_test_abnormal")
    labels = np.array([0] * len(normal) + [1] * len(abnormal))
    validation = validation_sessions(args.config, args.train_file, args.seed, args.validation_split_percentage)
    detector = load_detector(args.model, device="cpu")
    print(json.dumps({"model": args.model, "test_sessions": len(labels), "validation_sessions": len(validation)}))
    windows = args.next_event_window or [None]
    runs = [(mode, window) for mode in args.modes for window in (windows if mode == "linear" else [None])]
    for mode, window in runs:
        name = mode if window is None else f"{mode} (window {window})"
        settings = {"scoring_mode": mode, **({"next_event_window": window} if window else {})}
        started = time.perf_counter()
        test = detector(normal + abnormal, return_events=False, threshold=float("inf"), **settings)
        seconds = time.perf_counter() - started
        # The thresholds exactly as training sets them after a run (gate included): logbert.calibration.calibrate.
        calibrated = calibrate(detector, validation, args.target_fpr, **settings)
        result = {"test_seconds": seconds, "gated_threshold": calibrated["anomaly_threshold"],
                  "model_only_threshold": calibrated["model_only_threshold"],
                  "threshold_method": calibrated["threshold_method"],
                  "validation_sessions_new_to_gate": len(validation) - (calibrated["calibration_sessions_known_to_gate"]
                                                                        or 0)}
        for label, key, threshold in (("gated", "anomaly_score", calibrated["anomaly_threshold"]),
                                      ("model_alone", "model_score", calibrated["model_only_threshold"])):
            scores = np.array([r[key] for r in test])
            metrics = detection_metrics(scores, labels, threshold, PROJECTED_NORMAL_COUNT)
            result[label] = {"auroc": roc_auc_score(labels, scores), "auprc": average_precision_score(labels, scores),
                             **{k: metrics[k] for k in ("precision", "recall", "fpr", "f1", "projected_f1")}}
        model_scores = np.array([r["model_score"] for r in test])
        held_out = detector(validation, return_events=False, known_normal_gate=False, threshold=float("inf"),
                            **settings)
        validation_scores = np.array([r["model_score"] for r in held_out if r["num_unseen"] == 0])
        # The model alone at other thresholds: the empirical quantile, and the tail fit kept whatever its checks say.
        unchecked = tail_threshold(validation_scores, args.target_fpr, min_ks_pvalue=0.0, max_shape=float("inf"))
        for method, threshold in (("empirical", calibrate_threshold(validation_scores, args.target_fpr)),
                                  ("tail_unchecked", unchecked["threshold"])):
            metrics = detection_metrics(model_scores, labels, threshold, PROJECTED_NORMAL_COUNT)
            result["model_alone"][f"threshold_{method}"] = {
                "threshold": threshold, **{k: metrics[k] for k in ("recall", "fpr", "projected_f1")}}
        print(json.dumps({name: result}, indent=2, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
