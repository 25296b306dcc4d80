"""Pure functions from MLM outputs to per-event and per-session anomaly scores, and the label-free threshold.

No model and no I/O here: the pipeline runs the model and calls these. This file is also shipped next to
saved models as remote code, so it imports only torch and numpy.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

# Scores a session can be ranked by; see `session_scores`.
SCORE_NAMES = ("next_max_nll", "combined", "miss_ratio", "mean_nll", "max_nll", "end_nll")
# Scores that read the end slot (trained by `end_of_session_probability` > 0); meaningless without it.
END_SLOT_SCORES = ("next_max_nll", "combined", "end_nll")
# Scores read from the left-to-right rows and the end slot alone: the pipeline's masked_scores=False computes these.
LEFT_TO_RIGHT_SCORES = ("next_max_nll", "end_nll")
# Floor of an event's probability when turning it into a negative log-likelihood, so one impossible event
# does not make the score infinite and swamp the ranking of every other session.
MIN_PROBABILITY = 1e-12
# The highest score an event can get (an unseen event, or one the model gives no chance): -log MIN_PROBABILITY.
SCORE_CEILING = -math.log(MIN_PROBABILITY)

# How many model rows a session costs (see `masking_groups`):
# - "linear" (the default): every event is masked once among k replicas of its window, each masking the positions
#   i with i mod k == r (k = round(1 / mlm_probability), so about as many events are masked as in training), and
#   predicted left to right from at most `next_event_window` events before it. About k + L rows of bounded length
#   for L events: O(L) tokens.
# - "exhaustive": every event masked alone, and predicted from its whole prefix: 2L rows of up to L tokens, O(L^2).
SCORING_MODES = ("linear", "exhaustive")
DEFAULT_SCORING_MODE = "linear"
# Events a left-to-right prediction sees in "linear" mode; DeepLog's window (Du et al., CCS'17) is 10.
DEFAULT_NEXT_EVENT_WINDOW = 10
# Training's masking rate when the model's config does not store one (DataCollatorForLanguageModeling's default).
DEFAULT_MLM_PROBABILITY = 0.15


class NonFiniteScoreError(ValueError):
    """The model produced NaN or infinite log-probabilities: broken weights or inputs, never a verdict."""


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


def num_masking_replicas(mlm_probability: float) -> int:
    """k, the replicas per window in "linear" mode: each masks about `mlm_probability` of the events."""
    if not 0 < mlm_probability <= 1:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    return max(1, round(1 / mlm_probability))


def masking_groups(score_start: int, score_end: int, num_replicas: int | None) -> list[np.ndarray]:
    """The event positions masked together in one row, for the scored positions [score_start, score_end).

    Replica r masks the positions i with i mod k == r (k = `num_replicas`): the groups are disjoint and together
    cover every scored position once, and each row masks ~1/k of its events, spread out as training masks them.
    Positions are absolute (in the session), so the split does not depend on where a window starts. `None`
    masks every position alone (the exhaustive mode). Empty groups (a window shorter than k) are left out.
    """
    positions = np.arange(score_start, score_end)
    if num_replicas is None:
        return [positions[i: i + 1] for i in range(len(positions))]
    if num_replicas < 1:
        raise ValueError("num_replicas must be at least 1")
    groups = [positions[positions % num_replicas == replica] for replica in range(num_replicas)]
    return [group for group in groups if len(group)]


def next_event_context(event_index: int, window: int) -> tuple[int, int]:
    """[start, end) of the events that predict event `event_index` left to right: at most `window` events before it."""
    if window < 1:
        raise ValueError("the next-event window must hold at least one event")
    return max(0, event_index - window), event_index


def event_scores(logits: torch.Tensor, targets: torch.Tensor, excluded_ids: list[int], top_n: int,
                 num_ranked: int | None = None) -> dict:
    """Probability, rank and negative log-likelihood of each true event, and the model's top candidates.

    Args:
        logits: (N, V) at masked positions (V = the tokenizer's vocabulary, padding rows already cut).
        targets: (N,) the true token ids.
        excluded_ids: ids that are never a prediction ([PAD], [CLS], [SEP], [MASK], [UNK]).
        top_n: how many candidates to return.
        num_ranked: only the first `num_ranked` rows get a rank and candidates (the others, left-to-right and end
            slot predictions, need only their probability; rank 0, candidates 0): the (N, V) comparisons are the
            most costly part. None: every row.
    Returns:
        dict of tensors: probability (N,), nll (N,), rank (N,) 1-based, top_ids (N, top_n), top_probs (N, top_n).
    """
    # No (N, V) log-softmax is materialised: log P = logit - logsumexp, and ranks compare logits directly.
    logits = logits.float()
    if excluded_ids:
        logits = logits.index_fill(1, torch.tensor(excluded_ids, device=logits.device), float("-inf"))
    normaliser = torch.logsumexp(logits, dim=-1)  # (N,)
    target_logits = logits.gather(1, targets[:, None]).squeeze(1)  # -inf for an excluded target ([UNK])
    target_log_probs = target_logits - normaliser
    probability = target_log_probs.exp()
    nll = -torch.clamp(target_log_probs, min=math.log(MIN_PROBABILITY))
    ranked = len(logits) if num_ranked is None else min(num_ranked, len(logits))
    top_n = min(top_n, logits.size(1))
    rank = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    top_ids = torch.zeros((len(logits), top_n), dtype=torch.long, device=logits.device)
    top_probs = torch.zeros((len(logits), top_n), device=logits.device)
    if ranked:
        rank[:ranked] = (logits[:ranked] > target_logits[:ranked, None]).sum(dim=1) + 1
        top_logits, top_ids[:ranked] = logits[:ranked].topk(top_n, dim=-1)
        top_probs[:ranked] = (top_logits - normaliser[:ranked, None]).exp()
    return {"probability": probability, "nll": nll, "rank": rank, "top_ids": top_ids, "top_probs": top_probs}


def session_scores(nll: np.ndarray, rank: np.ndarray, unseen: np.ndarray, num_candidates: int,
                   end_nll: float = 0.0, next_nll: np.ndarray | None = None) -> dict[str, float]:
    """Per-session scores from its per-event results.

    - miss_ratio: LogBERT's criterion, the share of events not among the model's top `num_candidates`
      (an unseen event is always a miss).
    - mean_nll / max_nll: the average and the worst surprise of an event with the rest of the session around
      it (masked language model), in nats. An unseen event has probability 0 under the vocabulary and scores the
      ceiling `-log MIN_PROBABILITY`.
    - end_nll: the surprise that the session ends where it does (the end slot's -log P([SEP])); this is what
      catches truncated sessions, whose every event is locally plausible.
    - next_max_nll (the default): the worst surprise reading the session left to right, as DeepLog does: event i
      predicted from events 0..i-1 alone in the end slot, and the ending. With both sides visible, a block of
      events that never belongs in the session can explain itself (in `21 23 23 23 21` each 23 is predicted by its
      neighbours); from the left it cannot.
    - combined: max_nll + end_nll.
    `next_nll` holds -log P(event i | events before it) for i >= 1 (entry 0, which has no context, is ignored).
    """
    nll, rank, unseen = np.asarray(nll, float), np.asarray(rank), np.asarray(unseen, bool)
    if len(nll) == 0:
        raise ValueError("a session needs at least one event to be scored")
    misses = (rank > num_candidates) | unseen
    max_nll = float(nll.max())
    next_surprise = float(end_nll)
    if next_nll is not None and len(nll) > 1:
        next_surprise = max(next_surprise, float(np.max(np.asarray(next_nll, float)[1:])))
    return {
        "miss_ratio": float(misses.mean()),
        "mean_nll": float(nll.mean()),
        "max_nll": max_nll,
        "end_nll": float(end_nll),
        "next_max_nll": next_surprise,
        "num_misses": int(misses.sum()),
        "num_unseen": int(unseen.sum()),
        "combined": max_nll + float(end_nll),
    }


def count_vector_key(token_ids) -> int:
    """A 64-bit fingerprint of a session's event multiset (which events, how often; order ignored).

    The pipeline's known-normal check looks sessions up by it; training writes the keys of its sessions.
    """
    values, counts = np.unique(np.asarray(token_ids, dtype=np.int64), return_counts=True)
    digest = hashlib.blake2b(np.stack([values, counts]).astype("<i8").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def sessions_allowed_above(count: int, target_fpr: float) -> int:
    """How many of `count` normal sessions a target false-positive rate lets score above the threshold."""
    return int(math.floor(target_fpr * count))


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
    allowed = sessions_allowed_above(len(scores), target_fpr)
    return float(scores[len(scores) - 1 - allowed])
