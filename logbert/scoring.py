"""Pure functions from MLM outputs to per-event and per-session anomaly scores, and the label-free threshold.

No model and no I/O here: the pipeline runs the model and calls these. This file is also shipped next to
saved models as remote code, so it imports only torch and numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Scores a session can be ranked by; see `session_scores`.
SCORE_NAMES = ("combined", "miss_ratio", "mean_nll", "max_nll", "end_nll")
# Floor of an event's probability when turning it into a negative log-likelihood, so one impossible event
# does not make the score infinite and swamp the ranking of every other session.
MIN_PROBABILITY = 1e-12


@dataclass(frozen=True)
class Window:
    """A span of event positions [start, end) fed to the model, scoring positions [score_start, score_end)."""

    start: int
    end: int
    score_start: int
    score_end: int


def window_spans(num_events: int, window: int, stride: int | None = None) -> list[Window]:
    """Overlapping windows over a session too long for the model, so that every event gets a score.

    Each event is scored in the window where it has the most context on both sides: the windows overlap by
    `window - stride` events and each one scores the middle part of the overlap it shares with its neighbours.
    """
    if window < 1:
        raise ValueError("window must hold at least one event")
    if num_events <= window:
        return [Window(0, num_events, 0, num_events)]
    stride = stride or max(1, window // 2)
    starts = list(range(0, num_events - window + 1, stride))
    if starts[-1] + window < num_events:
        starts.append(num_events - window)
    windows = []
    for index, start in enumerate(starts):
        end = start + window
        score_start = 0 if index == 0 else (start + starts[index - 1] + window) // 2
        score_end = num_events if index == len(starts) - 1 else (starts[index + 1] + end) // 2
        windows.append(Window(start, end, score_start, score_end))
    return windows


def event_scores(logits: torch.Tensor, targets: torch.Tensor, excluded_ids: list[int], top_n: int) -> dict:
    """Probability, rank and negative log-likelihood of each true event, and the model's top candidates.

    Args:
        logits: (N, V) at masked positions (V = the tokenizer's vocabulary, padding rows already cut).
        targets: (N,) the true token ids.
        excluded_ids: ids that are never a prediction ([PAD], [CLS], [SEP], [MASK], [UNK]).
        top_n: how many candidates to return.
    Returns:
        dict of tensors: probability (N,), nll (N,), rank (N,) 1-based, top_ids (N, top_n), top_probs (N, top_n).
    """
    logits = logits.float().clone()
    if excluded_ids:
        logits[:, excluded_ids] = float("-inf")
    log_probs = torch.log_softmax(logits, dim=-1)
    target_log_probs = log_probs.gather(1, targets[:, None]).squeeze(1)  # -inf for an excluded target ([UNK])
    rank = (log_probs > target_log_probs[:, None]).sum(dim=1) + 1
    probability = target_log_probs.exp()
    nll = -torch.clamp(target_log_probs, min=math.log(MIN_PROBABILITY))
    top_probs, top_ids = log_probs.topk(min(top_n, log_probs.size(1)), dim=-1)
    return {"probability": probability, "nll": nll, "rank": rank, "top_ids": top_ids, "top_probs": top_probs.exp()}


def session_scores(nll: np.ndarray, rank: np.ndarray, unseen: np.ndarray, num_candidates: int,
                   end_nll: float = 0.0) -> dict[str, float]:
    """Per-session scores from its per-event results.

    - miss_ratio: LogBERT's criterion, the share of events not among the model's top `num_candidates`
      (an unseen event is always a miss).
    - mean_nll / max_nll: the average and the worst surprise of an event, in nats. An unseen event has
      probability 0 under the vocabulary and scores the ceiling `-log MIN_PROBABILITY`.
    - end_nll: the surprise that the session ends where it does (the end slot's -log P([SEP])); this is what
      catches truncated sessions, whose every event is locally plausible.
    - combined (the default): max_nll + end_nll, the worst event's surprise plus the ending's: two independent
      pieces of evidence (a wrong event, a wrong ending) add up. On HDFS it ranks better than either alone, the
      miss ratio or the mean (see the README's Results).
    """
    nll, rank, unseen = np.asarray(nll, float), np.asarray(rank), np.asarray(unseen, bool)
    if len(nll) == 0:
        raise ValueError("a session needs at least one event to be scored")
    misses = (rank > num_candidates) | unseen
    max_nll = float(nll.max())
    return {
        "miss_ratio": float(misses.mean()),
        "mean_nll": float(nll.mean()),
        "max_nll": max_nll,
        "end_nll": float(end_nll),
        "num_misses": int(misses.sum()),
        "num_unseen": int(unseen.sum()),
        "combined": max_nll + float(end_nll),
    }


def calibrate_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold at which at most `target_fpr` of these normal sessions score above it.

    Sessions with `score > threshold` are anomalies. The normal scores come from held-out normal sessions
    (the validation split of training), never from the test set, so no label is needed.
    """
    scores = np.sort(np.asarray(normal_scores, dtype=float))
    if len(scores) == 0:
        raise ValueError("threshold calibration needs at least one normal session")
    if not 0 <= target_fpr < 1:
        raise ValueError("target_fpr must be in [0, 1)")
    allowed = int(math.floor(target_fpr * len(scores)))  # sessions allowed above the threshold
    return float(scores[len(scores) - 1 - allowed])
