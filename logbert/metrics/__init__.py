"""Evaluation metrics as local `evaluate` modules (hub metric scripts cannot be fetched offline)."""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import numpy as np
import torch

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load a metric module shipped in logbert/metrics/ by absolute path: works offline, from any directory."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"no metric module {name!r} in {METRICS_DIR}")
    return evaluate.load(str(path))


def preprocess_logits_for_metrics(logits: torch.Tensor, labels: torch.Tensor, max_k: int = 10) -> torch.Tensor:
    """Reduce MLM logits on the device to what the metrics need, so full-vocabulary logits are never kept.

    Args:
        logits: (N, V) at masked positions (LogBertForMaskedLM with labels) or (B, T, V).
        labels: (B, T), -100 where not masked.
    Returns:
        (B, T, 2 + max_k) float, -100 where not masked: the true id, its negative log-likelihood, then the
        top-k predicted ids. Batch-shaped, so the Trainer can pad and gather it across processes.
    """
    if isinstance(logits, tuple):
        logits = logits[0]
    masked = labels != -100
    targets = labels[masked]
    if logits.dim() == 3:
        logits = logits[masked]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    top = log_probs.topk(min(max_k, log_probs.size(-1)), dim=-1).indices
    rows = torch.cat([targets[:, None].float(), nll[:, None], top.float()], dim=1)  # (N, 2 + k)
    reduced = torch.full((*labels.shape, rows.size(1)), -100.0, device=rows.device)
    reduced[masked] = rows
    return reduced


def build_compute_metrics(top_k: list[int], most_frequent_id: int | None = None):
    """`compute_metrics` for the Trainer: masked-event accuracy, top-k accuracy, perplexity and a baseline.

    The baseline is the accuracy of always predicting the most frequent training event: a model that does not
    beat it has learnt nothing about the order of events.
    """
    metric = load_metric("masked_event_accuracy")

    def compute_metrics(eval_prediction) -> dict[str, float]:
        rows = np.asarray(eval_prediction.predictions)
        rows = rows.reshape(-1, rows.shape[-1]) if rows.size else rows.reshape(0, 2 + max(top_k))
        rows = rows[rows[:, 0] >= 0]  # -100: not masked, or padding added when gathering across processes
        truth = rows[:, 0].astype(np.int64)
        candidates = rows[:, 2:].astype(np.int64)
        result = metric.compute(predictions=candidates, references=truth, top_k=top_k)
        mean_nll = float(rows[:, 1].mean()) if len(rows) else float("nan")
        result["perplexity"] = math.exp(mean_nll) if mean_nll < 700 else float("inf")
        if most_frequent_id is not None and len(truth):
            result["baseline_accuracy"] = float((truth == most_frequent_id).mean())
        return result

    return compute_metrics
