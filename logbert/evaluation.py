"""Detection on files: label-free threshold calibration, the count-vector baseline, the evaluation report."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data import DataError, Rejection, _check_label, expand_data_files, iter_file_records
from .metrics import load_metric
from .scoring import calibrate_threshold, count_vector_key

logger = logging.getLogger(__name__)

# Scoring settings stored in config.json next to the weights, read by the pipeline by default.
SCORING_CONFIG_KEYS = ("anomaly_threshold", "model_only_threshold", "threshold_target_fpr", "score_name",
                       "num_candidates", "calibration_sessions")


def iter_sessions(paths: Iterable[str], skip_bad_records: bool = False,
                  rejected: list[Rejection] | None = None) -> Iterator[tuple[str, int, Any, int]]:
    """Yield (file, record number, session, label) from session files of any supported format, one at a time.

    `label` is 1/0 from a record's `label` field, or -1 when it has none. Unreadable records raise DataError
    naming the file and line, or with `skip_bad_records` are appended to `rejected`.
    """
    for path in paths:
        for item in iter_file_records(path, skip_bad_records):
            if isinstance(item, Rejection):
                if rejected is not None:
                    rejected.append(item)
                continue
            number, record = item
            label, problem = -1, None
            if isinstance(record, dict):
                label, problem = _check_label(record)
                empty = not (record.get("token_ids") or record.get("event_sequence"))
            elif isinstance(record, tuple):  # a line of event IDs
                record, empty = list(record), not record
            else:
                problem, empty = f"expected a session, got {type(record).__name__}", False
            if not problem and empty:
                problem = "empty session: expected at least one event"
            if problem:
                rejection = Rejection(path, number, problem, record)
                if not skip_bad_records:
                    raise DataError(rejection.message())
                if rejected is not None:
                    rejected.append(rejection)
                continue
            yield path, number, record, label


def score_stream(detector, sessions: Iterable[tuple[str, int, Any, int]], chunk_size: int = 2048,
                 total: int | None = None, **score_kwargs) -> Iterator[tuple[str, int, int, dict]]:
    """Score (file, record, session, label) tuples in chunks (bounded memory); yield (file, record, label, result)."""
    chunk: list = []
    progress = tqdm(total=total, unit="session", desc="Scoring")

    def flush():
        results = detector.score([session for _, _, session, _ in chunk], **score_kwargs)
        progress.update(len(chunk))
        for (path, number, _, label), result in zip(chunk, results):
            yield path, number, label, result
        chunk.clear()

    for item in sessions:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield from flush()
    if chunk:
        yield from flush()
    progress.close()


def calibrate(detector, normal_sessions: list, target_fpr: float, score_name: str | None = None,
              num_candidates: int | None = None) -> dict[str, Any]:
    """Threshold from held-out normal sessions at a target false-positive rate; no label is needed.

    Returns the scoring settings to store in the model's config.json: `anomaly_threshold` for the pipeline's
    `anomaly_score` (known-normal gate included when the model has one) and `model_only_threshold` for
    `model_score`, the model alone, which the evaluation report shows beside it.
    """
    results = detector.score(normal_sessions, return_events=False, score_name=score_name,
                             num_candidates=num_candidates, threshold=float("inf"))
    scores = np.array([r["anomaly_score"] for r in results])
    threshold = calibrate_threshold(scores, target_fpr)
    model_only_threshold = calibrate_threshold(np.array([r["model_score"] for r in results]), target_fpr)
    if all(r["known_count_vector"] for r in results):  # None (no gate) is falsy
        logger.warning(
            "Every one of the %d calibration sessions has an event multiset known from training, so the known-normal "
            "gate scores them all 0 and the threshold is 0: every session with a new multiset will be flagged (the "
            "count-vector baseline). The model's own threshold (model_only_threshold) is %.4g.",
            len(results), model_only_threshold)
    if target_fpr * len(scores) < 1:
        logger.warning(
            "A false-positive rate of %g cannot be estimated from %d normal sessions: the threshold is their highest "
            "score, so one unusual normal session sets it. Hold out more sessions (at least %d) or raise the target.",
            target_fpr, len(scores), int(np.ceil(1 / target_fpr)) if target_fpr > 0 else 0)
    return {
        "anomaly_threshold": threshold,
        "model_only_threshold": model_only_threshold,
        "threshold_target_fpr": target_fpr,
        "score_name": results[0]["score_name"],
        "num_candidates": num_candidates or getattr(detector.model.config, "num_candidates", None) or 5,
        "calibration_sessions": len(scores),
    }


def tune_threshold_on_dev(detector, sessions: list, labels: list[int]) -> dict[str, Any]:
    """Threshold that maximises F1 on a labelled development set (never the test set)."""
    results = detector.score(sessions, return_events=False, threshold=float("inf"))
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

    Candidates are the distinct scores, as before; ties in F1 go to the lowest threshold. One sort
    (precision_recall_curve), not one pass over the scores per candidate.
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
    """Write scoring settings into config.json (what `from_pretrained` and the pipeline read)."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config.update({k: v for k, v in settings.items() if k in SCORING_CONFIG_KEYS})
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


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


def event_count_vector(session: Any) -> tuple:
    """The multiset of a session's events, order ignored (Landauer et al., FSE'24)."""
    if isinstance(session, dict):
        events = session.get("event_sequence") or [t for t, m in zip(session["token_ids"], session.get(
            "attention_mask") or [1] * len(session["token_ids"])) if m]
    elif isinstance(session, str):
        events = session.split()
    else:
        events = session
    return tuple(sorted(Counter(map(str, events)).items()))


class CountVectorBaseline:
    """A session is anomalous when its event-count vector never occurs in training: no model, no labels."""

    def __init__(self, training_sessions: Iterable[Any]):
        self.known = {event_count_vector(session) for session in training_sessions}

    def score(self, session: Any) -> float:
        return 0.0 if event_count_vector(session) in self.known else 1.0


def detection_metrics(scores, labels, threshold: float, projected_normal_count: int | None = None) -> dict:
    metric = load_metric("anomaly_detection")
    return metric.compute(predictions=list(map(float, scores)), references=list(map(int, labels)),
                          threshold=threshold, projected_normal_count=projected_normal_count)


def write_plots(output_dir: Path, scores: np.ndarray, labels: np.ndarray, threshold: float,
                baseline_scores: np.ndarray | None = None) -> list[str]:
    """ROC and precision-recall curves, and score histograms of normal against anomalous sessions (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn.metrics import precision_recall_curve, roc_curve

    written = []
    finite = np.where(np.isfinite(scores), scores, np.nanmax(scores[np.isfinite(scores)]) if np.isfinite(
        scores).any() else 0)

    # The ROC's x axis is logarithmic: the operating points that matter are at false-positive rates of 0.1%.
    # The baseline flags yes/no: its curve has one real point, after roc_curve's leading (0, 0) and before
    # precision_recall_curve's closing (recall 0, precision 1).
    curves = (("roc.png", "ROC", "false-positive rate (log)", "true-positive rate", "lower right",
               lambda values: roc_curve(labels, values, drop_intermediate=False)[:2],
               {"xscale": "log", "xlim": (1e-4, 1)}, 1),
              ("precision_recall.png", "Precision-recall", "recall", "precision", "lower left",
               lambda values: precision_recall_curve(labels, values)[1::-1], {}, -2))
    for file_name, title, x_label, y_label, legend_place, points, axis_settings, baseline_point in curves:
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.plot(*points(finite), label="LogBERT")
        if baseline_scores is not None:
            x, y = points(baseline_scores)
            axis.plot(x[baseline_point], y[baseline_point], "o", color="tab:orange", label="count-vector baseline")
        axis.set(xlabel=x_label, ylabel=y_label, title=title, ylim=(0, 1.02), **axis_settings)
        axis.legend(loc=legend_place)
        figure.tight_layout()
        figure.savefig(output_dir / file_name, dpi=120)
        written.append(str(output_dir / file_name))
        plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(finite.min(), finite.max(), 60) if finite.max() > finite.min() else 10
    axis.hist(finite[labels == 0], bins=bins, alpha=0.6, label="normal", density=True)
    axis.hist(finite[labels == 1], bins=bins, alpha=0.6, label="anomalous", density=True)
    axis.axvline(threshold, color="black", linestyle=":", label="threshold")
    axis.set(xlabel="anomaly score", ylabel="density", title="Score distribution", yscale="log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "score_histogram.png", dpi=120)
    written.append(str(output_dir / "score_histogram.png"))
    plt.close(figure)
    return written


def expand_inputs(patterns: list[str] | None, what: str) -> list[str]:
    """Files in the order the user named them (each glob sorted), so output rows follow the input."""
    files = [path for pattern in patterns or [] for path in expand_data_files([pattern], what)]
    return list(dict.fromkeys(files))
