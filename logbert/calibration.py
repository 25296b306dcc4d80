"""Anomaly thresholds: label-free calibration at a target false-positive rate, dev-set tuning, storing them."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .scoring import LEFT_TO_RIGHT_SCORES, calibrate_threshold, count_vector_key, sessions_allowed_above

logger = logging.getLogger(__name__)

# Sessions scored per call while calibrating: the progress bar moves, and memory stays bounded.
CALIBRATION_CHUNK = 1024

# Scoring settings stored in config.json next to the weights, read by the pipeline by default.
SCORING_CONFIG_KEYS = ("anomaly_threshold", "model_only_threshold", "threshold_method", "tail_fit",
                       "threshold_target_fpr", "score_name", "num_candidates", "calibration_sessions",
                       "calibration_sessions_with_unseen_events", "calibration_sessions_known_to_gate",
                       "scoring_mode", "next_event_window")


def calibrate(detector, normal_sessions: list, target_fpr: float, score_name: str | None = None,
              num_candidates: int | None = None, **score_kwargs) -> dict[str, Any]:
    """Threshold from held-out normal sessions at a target false-positive rate; no label is needed.

    Returns the scoring settings to store in the model's config.json:
    - `model_only_threshold`, for `model_score` (the model alone): the tail of the normal scores fitted with a
      generalized Pareto distribution (`logbert.tail_fit`, SPOT), or their empirical quantile when the fit is poor
      (`threshold_method` says which, `tail_fit` holds the fit). Sessions with an event unseen in training score at
      the ceiling whatever the model thinks, so they are left out; a threshold at the ceiling is an error.
    - `anomaly_threshold`, for the pipeline's `anomaly_score` (known-normal gate included when the model has one):
      the empirical quantile, since gated scores pile up at 0. When the gate knows every calibration session
      that quantile is 0, which would flag every new event multiset; the model's own threshold is used instead.
    """
    from .tail_fit import tail_threshold

    score_kwargs = {**verdict_only(detector, score_name), **score_kwargs}
    results = []
    with tqdm(total=len(normal_sessions), unit="session", desc="Calibrating") as progress:
        for start in range(0, len(normal_sessions), CALIBRATION_CHUNK):
            chunk = normal_sessions[start: start + CALIBRATION_CHUNK]
            # Identical sessions are scored once (the pipeline's cache), so repeats cost nothing.
            results += detector.score(chunk, return_events=False, score_name=score_name,
                                      num_candidates=num_candidates, threshold=float("inf"), **score_kwargs)
            progress.update(len(chunk))
    if not results:
        raise ValueError("no calibration session: give normal sessions to set the threshold on")
    seen = [r for r in results if not r.get("num_unseen")]
    if not seen:
        raise ValueError(f"every one of the {len(results)} calibration sessions holds an event unseen in training, "
                         "so the model cannot tell them apart: calibrate on sessions from the training data's system")
    fit = tail_threshold(np.array([r["model_score"] for r in seen]), target_fpr)
    model_only_threshold = fit["threshold"]
    gate = results[0]["known_count_vector"] is not None
    threshold = calibrate_threshold(np.array([r["anomaly_score"] for r in seen]), target_fpr) if gate \
        else model_only_threshold
    # Counted over the sessions the threshold is read from (an unseen event makes a multiset new, but such
    # sessions are left out).
    new_to_gate = sum(r["known_count_vector"] is False for r in seen) if gate else 0
    allowed = sessions_allowed_above(len(seen), target_fpr)  # what calibrate_threshold lets above the threshold
    if gate and not new_to_gate:
        logger.warning("All %d calibration sessions repeat an event multiset known from training, so the gate alone "
                       "gives no threshold: sessions with a new multiset are judged by the model at its own "
                       "threshold %.4g (%s).", len(seen), model_only_threshold, fit["threshold_method"])
        threshold = model_only_threshold
    elif gate and new_to_gate <= allowed:
        logger.warning(
            "Only %d of %d calibration sessions hold an event multiset new to the gate, no more than the %d that the "
            "false-positive target %g allows: the gated threshold is %.4g, so a session with a new multiset is "
            "flagged on almost any score, much as the count-vector baseline does. To have the model judge those "
            "sessions, lower the target or score with threshold=%.4g (the model's own).", new_to_gate, len(seen),
            allowed, target_fpr, threshold, model_only_threshold)
    if not allowed and fit["threshold_method"] != "gpd_tail":
        logger.warning(
            "A false-positive rate of %g cannot be read off %d normal sessions, and the tail fit was not usable: the "
            "threshold is their highest score. Hold out more sessions (at least %d) or raise the target.",
            target_fpr, len(seen), int(np.ceil(1 / target_fpr)))
    return {
        "anomaly_threshold": threshold,
        "model_only_threshold": model_only_threshold,
        "threshold_method": fit["threshold_method"],
        "tail_fit": fit["tail_fit"],
        "threshold_target_fpr": target_fpr,
        "score_name": results[0]["score_name"],
        "num_candidates": num_candidates or getattr(detector.model.config, "num_candidates", None) or 5,
        "calibration_sessions": len(results),
        "calibration_sessions_with_unseen_events": len(results) - len(seen),
        "calibration_sessions_known_to_gate": sum(r["known_count_vector"] is True for r in results) if gate else None,
    }


def verdict_only(detector, score_name: str | None) -> dict:
    """`masked_scores=False` when the score reads only the left-to-right rows and the end slot (the default): the
    thresholds are the same, from about a third of the model's work (`LogAnomalyPipeline`'s docstring)."""
    from .pipeline import DEFAULT_SCORE_NAME

    name = score_name or getattr(detector.model.config, "score_name", None) or DEFAULT_SCORE_NAME
    return {"masked_scores": False} if name in LEFT_TO_RIGHT_SCORES else {}


def tune_threshold_on_dev(detector, sessions: list, labels: list[int]) -> dict[str, Any]:
    """Threshold that maximises F1 on a labelled development set (never the test set)."""
    results = detector.score(sessions, return_events=False, threshold=float("inf"), **verdict_only(detector, None))
    scores, labels = np.array([r["anomaly_score"] for r in results]), np.asarray(labels)
    if not (labels == 1).any() or not (labels == 0).any():
        raise ValueError("a development set needs both normal and anomalous sessions")
    model_scores = np.array([r["model_score"] for r in results])
    return {"anomaly_threshold": best_f1_threshold(scores, labels),
            "model_only_threshold": best_f1_threshold(model_scores, labels),
            "threshold_target_fpr": None, "score_name": results[0]["score_name"],
            "num_candidates": getattr(detector.model.config, "num_candidates", None) or 5,
            "calibration_sessions": len(scores)}


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The session score that, as a threshold (flag `score > threshold`), gives the highest F1 on these labels.

    Candidates are the distinct scores; equal F1 goes to the lowest of them. One sort (precision_recall_curve),
    O(n log n), not one pass over the scores per candidate.
    """
    from sklearn.metrics import precision_recall_curve

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    candidates = np.unique(scores)  # ascending
    positives = int(labels.sum())
    if positives == 0:  # F1 is 0 at every threshold
        return float(candidates[0])
    precision, recall, cuts = precision_recall_curve(labels, scores)  # cuts ascending; one more p/r point
    # The curve flags `score >= cut`, i.e. `score > ` the distinct score just below the cut: the strict threshold
    # that cut stands for. The lowest cut has none below it (it flags every session, which no candidate does);
    # the highest candidate flags nothing and keeps F1 0.
    below = np.searchsorted(candidates, cuts) - 1
    keep = below >= 0
    # Integer counts back from the rates, so that F1 is 2 tp / (flagged + positives) as in the per-candidate
    # search it replaces, and equal F1 values tie exactly.
    true_positives = np.rint(recall[:-1][keep] * positives)
    flagged = np.rint(np.divide(true_positives, precision[:-1][keep], out=np.zeros_like(true_positives),
                                where=true_positives > 0))
    f1 = np.zeros(len(candidates))
    f1[below[keep]] = 2 * true_positives / (flagged + positives)
    return float(candidates[int(np.argmax(f1))])  # argmax: the first (lowest) of equal maxima


def apply_scoring_config(model_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Write scoring settings into config.json (what `from_pretrained` and the pipeline read).

    Atomically: a run killed while writing leaves the old config.json, never a truncated one.
    """
    from .export import write_text_atomically

    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config.update({k: v for k, v in settings.items() if k in SCORING_CONFIG_KEYS})
    write_text_atomically(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def known_count_vector_keys(dataset, tokenizer) -> set[int]:
    """Fingerprints of the event multisets of a tokenized dataset's sessions ([CLS]/[SEP]/[PAD] left out).

    Reads the `input_ids` column through Arrow, a batch at a time: no Python list per session.
    """
    framing = np.array([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    keys = set()
    for batch in dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=65536):
        for chunk in batch.column("input_ids").chunks:
            offsets = chunk.offsets.to_numpy()
            values = chunk.values.to_numpy(zero_copy_only=False)
            for start, end in itertools.pairwise(offsets):
                ids = values[start:end]
                keys.add(count_vector_key(ids[~np.isin(ids, framing)]))
    return keys


def calibration_sessions(dataset, kind: str, limit: int) -> list:
    """Held-out sessions known or assumed normal (label != 1), in the form the scoring pipeline takes."""
    from .data import EVENTS_KIND

    rows = dataset.select(range(min(len(dataset), limit)))
    sessions = rows["event_ids"] if kind == EVENTS_KIND else [{"token_ids": ids} for ids in rows["input_ids"]]
    return [session for session, label in zip(sessions, rows["label"]) if label != 1]


def calibrate_model_folder(directory: str | os.PathLike, normal_sessions: list, target_fpr: float,
                           score_name: str | None = None, num_candidates: int | None = None,
                           device: str | None = None) -> dict[str, Any]:
    """Score normal sessions with an exported model, store the threshold in its config.json, refresh its card.

    Returns the scoring settings written (see `calibrate`).
    """
    from .cli import load_detector  # the pipeline (and torch) only when a model is really calibrated
    from .export import write_model_card

    started = time.perf_counter()
    detector = load_detector(str(directory), device=device)
    settings = calibrate(detector, normal_sessions, target_fpr, score_name, num_candidates)
    apply_scoring_config(directory, settings)
    write_model_card(directory)
    logger.info("Calibrated %s on %d validation sessions in %.1f s", directory, len(normal_sessions),
                time.perf_counter() - started)
    return settings
