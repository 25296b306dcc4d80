"""Anomaly-detection metrics for session scores: precision, recall, F1, FPR at a threshold; AUROC and AUPRC."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Detection quality of anomaly scores. `predictions` are session scores (higher = more anomalous), `references`
the labels (1 = anomalous). At `threshold` a session with score > threshold is flagged. Threshold-free:
AUROC (ties count half) and AUPRC (average precision). With `projected_normal_count`, also the F1 expected
when the same false-positive rate applies to that many normal sessions (the HDFS protocol's 553,366 normal
test sessions when only a sample of them is at hand).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): anomaly scores.
    references (list of int): 1 anomalous, 0 normal.
    threshold (float): flag scores strictly above it.
    projected_normal_count (int, optional): normal sessions of the full protocol, for projected_f1.
Returns:
    precision, recall, f1, fpr, auroc, auprc, threshold, tp, fp, tn, fn, and projected_precision/projected_f1.
Examples:
    >>> metric = evaluate.load("logbert/metrics/anomaly_detection")
    >>> metric.compute(predictions=[0.1, 0.9, 0.8, 0.2], references=[0, 1, 1, 0], threshold=0.5)["f1"]
    1.0
"""


def _cumulative_counts(scores, labels):
    """Scores sorted high to low, cut at every distinct value: (true positives, flagged, labels, thresholds)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    return np.cumsum(labels)[distinct], distinct + 1, labels, scores[distinct]


def roc_points(scores, labels):
    """False- and true-positive rates at every distinct threshold, from the highest score down."""
    tps, flagged, labels, thresholds = _cumulative_counts(scores, labels)
    positives, negatives = max(labels.sum(), 1), max(len(labels) - labels.sum(), 1)
    return np.r_[0, (flagged - tps) / negatives], np.r_[0, tps / positives], np.r_[np.inf, thresholds]


def precision_recall_points(scores, labels):
    """Precision and recall at every distinct threshold, from the highest score down."""
    tps, flagged, labels, _ = _cumulative_counts(scores, labels)
    return tps / flagged, tps / max(labels.sum(), 1)


def _auroc(scores, labels):
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties, so a tie counts half
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _auprc(scores, labels):
    precision, recall = precision_recall_points(scores, labels)
    return float(np.sum(np.diff(np.r_[0, recall]) * precision)) if np.sum(labels) else float("nan")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AnomalyDetection(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, threshold, projected_normal_count=None):
        scores, labels = np.asarray(predictions, float), np.asarray(references, int)
        flagged = scores > threshold
        tp = int(np.sum(flagged & (labels == 1)))
        fp = int(np.sum(flagged & (labels == 0)))
        fn = int(np.sum(~flagged & (labels == 1)))
        tn = int(np.sum(~flagged & (labels == 0)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        fpr = fp / (fp + tn) if fp + tn else 0.0
        result = {
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "fpr": fpr,
            "auroc": _auroc(scores, labels),
            "auprc": _auprc(scores, labels),
            "threshold": float(threshold),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        }
        if projected_normal_count:
            projected_fp = fpr * projected_normal_count
            projected_precision = tp / (tp + projected_fp) if tp + projected_fp else 0.0
            result["projected_false_positives"] = projected_fp
            result["projected_precision"] = projected_precision
            result["projected_f1"] = (2 * projected_precision * recall / (projected_precision + recall)
                                      if projected_precision + recall else 0.0)
        return result
