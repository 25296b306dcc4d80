"""Anomaly-detection metrics for session scores: precision, recall, F1, FPR at a threshold; AUROC and AUPRC."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

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
        flagged = (scores > threshold).astype(int)  # strict: a score equal to the threshold is normal
        tn, fp, fn, tp = (int(count) for count in confusion_matrix(labels, flagged, labels=[0, 1]).ravel())
        # zero_division=0: nothing flagged (or no anomaly) gives precision (recall) 0, not a warning
        precision, recall, f1, _ = precision_recall_fscore_support(labels, flagged, average="binary", pos_label=1,
                                                                   zero_division=0.0)
        precision, recall, f1 = float(precision), float(recall), float(f1)
        fpr = fp / (fp + tn) if fp + tn else 0.0
        both_classes = 0 < labels.sum() < len(labels)
        result = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "fpr": fpr,
            # AUROC counts a tie between a normal and an anomalous session as half a correct ordering; it and
            # AUPRC are undefined (NaN) without both classes / without an anomaly.
            "auroc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
            "auprc": float(average_precision_score(labels, scores)) if labels.sum() else float("nan"),
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
