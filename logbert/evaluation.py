"""Detection on files: reading and scoring test sessions, the count-vector baseline, the evaluation report."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data import DataError, Rejection, _check_label, expand_data_files, iter_file_records
from .metrics import load_metric

logger = logging.getLogger(__name__)


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
