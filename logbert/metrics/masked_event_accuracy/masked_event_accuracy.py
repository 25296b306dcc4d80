"""Masked-event accuracy: top-1 and top-k accuracy of the model's predictions at masked positions."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy of masked-event prediction for LogBERT. `predictions` holds, for each masked position, the model's
candidate event ids best first (top-k); `references` the true event id. Reports `accuracy` (the best
candidate is right) and `top_{k}_accuracy` for each requested k (the true event is among the first k).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): candidate ids per masked position, best first.
    references (list of int): the true id per masked position.
    top_k (list of int, optional): the k values to report; default: the number of candidates given.
Returns:
    accuracy (float), top_{k}_accuracy (float) for each k, and num_masked (int).
Examples:
    >>> metric = evaluate.load("logbert/metrics/masked_event_accuracy")
    >>> metric.compute(predictions=[[5, 9], [9, 5]], references=[5, 5], top_k=[2])
    {'accuracy': 0.5, 'top_2_accuracy': 1.0, 'num_masked': 2}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskedEventAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Guo, Yuan, Wu. LogBERT: Log Anomaly Detection via BERT. IJCNN 2021.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, top_k=None):
        candidates = np.asarray(predictions, dtype=np.int64).reshape(len(references), -1)
        truth = np.asarray(references, dtype=np.int64)[:, None]
        hits = candidates == truth  # (N, K)
        result = {"accuracy": float(hits[:, :1].any(axis=1).mean()) if len(truth) else 0.0}
        for k in top_k or [candidates.shape[1]]:
            if k > candidates.shape[1]:
                raise ValueError(f"top_k {k} asks for more candidates than the {candidates.shape[1]} given")
            result[f"top_{k}_accuracy"] = float(hits[:, :k].any(axis=1).mean()) if len(truth) else 0.0
        result["num_masked"] = int(len(truth))
        return result
