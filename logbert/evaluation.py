"""Detection on files: reading and scoring test sessions, the count-vector baseline, the evaluation report."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data import DataError, Rejection, iter_file_records
from .ingest.files import expand_inputs  # noqa: F401 (re-exported)
from .session import FRAME_TOKEN_IDS, SessionError, normalize_session

logger = logging.getLogger(__name__)


def iter_sessions(paths: Iterable[str], skip_bad_records: bool = False,
                  rejected: list[Rejection] | None = None) -> Iterator[tuple[str, int, Any, int]]:
    """Yield (file, record number, session, label) from session files of any supported format, one at a time.

    Every record is validated by `logbert.session.normalize_session`, with training's rules and messages; the
    record itself is passed on as it is (the pipeline reads it). `label` is 1/0 from a record's `label` field, or
    -1 when it has none. Bad records raise DataError naming the file and record, or with `skip_bad_records` are
    appended to `rejected`.
    """
    for path in paths:
        for item in iter_file_records(path, skip_bad_records):
            if isinstance(item, Rejection):
                if rejected is not None:
                    rejected.append(item)
                continue
            number, record = item
            try:
                session = normalize_session(record)
            except SessionError as error:
                rejection = Rejection(path, number, error.reason, record)
                if not skip_bad_records:
                    raise DataError(rejection.message()) from None
                if rejected is not None:
                    rejected.append(rejection)
                continue
            yield path, number, list(record) if isinstance(record, tuple) else record, session.label


def score_stream(detector, sessions: Iterable[tuple[str, int, Any, int]], chunk_size: int = 2048,
                 total: int | None = None, rejected: list[Rejection] | None = None,
                 **score_kwargs) -> Iterator[tuple[str, int, int, dict]]:
    """Score (file, record, session, label) tuples in chunks (bounded memory); yield (file, record, label, result).

    With `rejected` (a list), a session the model refuses is quarantined there and the others are still scored;
    without it, the first refusal stops the stream.
    """
    chunk: list = []

    def score(items: list) -> Iterator[tuple[str, int, int, dict]]:
        try:
            results = detector.score([session for _, _, session, _ in items], **score_kwargs)
        except ValueError as error:
            index = getattr(error, "index", None)  # the session the pipeline refused, in this chunk
            if rejected is None:
                if index is None:
                    raise
                path, number = items[index][:2]
                raise SessionError(error.reason, f"{path}: record {number}") from None
            if len(items) == 1:  # the one the model refuses: quarantined with the model's reason
                path, number, session, _ = items[0]
                rejected.append(Rejection(path, number, getattr(error, "reason", str(error)), session))
                return
            for item in items:  # find it, and score the rest
                yield from score([item])
            return
        for (path, number, _, label), result in zip(items, results):
            yield path, number, label, result

    with tqdm(total=total, unit="session", desc="Scoring") as progress:
        for item in sessions:
            chunk.append(item)
            if len(chunk) >= chunk_size:
                yield from score(chunk)
                progress.update(len(chunk))
                chunk = []
        if chunk:
            yield from score(chunk)
            progress.update(len(chunk))


def event_count_vector(session: Any) -> tuple:
    """The multiset of a session's events, order ignored (Landauer et al., FSE'24); frame tokens left out."""
    normal = normalize_session(session)
    events = normal.events if normal.events is not None else [t for t in normal.token_ids if t not in FRAME_TOKEN_IDS]
    return tuple(sorted(Counter(map(str, events)).items()))


class CountVectorBaseline:
    """A session is anomalous when its event-count vector never occurs in training: no model, no labels."""

    def __init__(self, training_sessions: Iterable[Any]):
        self.known = {event_count_vector(session) for session in training_sessions}

    def score(self, session: Any) -> float:
        return 0.0 if event_count_vector(session) in self.known else 1.0


def detection_metrics(scores, labels, threshold: float, projected_normal_count: int | None = None) -> dict:
    from .metrics import load_metric  # `evaluate` imports transformers' pipelines: seconds, only when needed

    metric = load_metric("anomaly_detection")
    return metric.compute(predictions=list(map(float, scores)), references=list(map(int, labels)),
                          threshold=threshold, projected_normal_count=projected_normal_count)


def write_plots(output_dir: Path, scores: np.ndarray, labels: np.ndarray, threshold: float,
                baseline_scores: np.ndarray | None = None, model_scores: np.ndarray | None = None,
                model_threshold: float | None = None) -> list[str]:
    """ROC and precision-recall curves, and score histograms of normal against anomalous sessions (PNG).

    Args:
        scores: (N,) `anomaly_score`s, the known-normal gate included when the model has one.
        labels: (N,) 1 anomalous, 0 normal.
        threshold: the threshold in use (a session is flagged when its score is above it), marked on the ROC.
        baseline_scores: (N,) 0/1 verdicts of the count-vector baseline, drawn as its one operating point.
        model_scores: (N,) `model_score`s, the model without the gate, drawn beside the gated curve;
            `model_threshold` is its own operating point.
    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    labels = np.asarray(labels)
    both_classes = 0 < labels.sum() < len(labels)
    detectors = [("LogBERT + known-normal gate" if model_scores is not None else "LogBERT", _finite(scores), threshold,
                  "tab:blue")]
    if model_scores is not None:
        detectors.append(("LogBERT model alone", _finite(model_scores), model_threshold, "tab:green"))

    # The ROC's x axis is logarithmic: the operating points that matter are at false-positive rates of 0.1%; a
    # false-positive rate of 0 is drawn at the axis' left edge.
    figure, axis = plt.subplots(figsize=(5, 5))
    for name, values, cut, color in detectors:
        false_positive_rate, true_positive_rate, _ = roc_curve(labels, values, drop_intermediate=False)
        area = f" (AUROC {roc_auc_score(labels, values):.4f})" if both_classes else ""
        axis.plot(false_positive_rate, true_positive_rate, color=color, label=name + area)
        if cut is not None:
            fpr, tpr = _rates(values > cut, labels)
            axis.plot(max(fpr, ROC_MIN_FPR), tpr, "o", color=color, markeredgecolor="black",
                      label=f"threshold {cut:.4g}: FPR {fpr:.2%}, TPR {tpr:.2%}")
    if baseline_scores is not None:
        fpr, tpr = _rates(np.asarray(baseline_scores) > 0.5, labels)
        axis.plot(max(fpr, ROC_MIN_FPR), tpr, "s", color="tab:orange", label="count-vector baseline")
    axis.set(xlabel="false-positive rate (log)", ylabel="true-positive rate", title="ROC", ylim=(0, 1.02),
             xscale="log", xlim=(ROC_MIN_FPR, 1))
    written = [_save(figure, axis, output_dir / "roc.png")]

    figure, axis = plt.subplots(figsize=(5, 5))
    for name, values, _, color in detectors:
        precision, recall, _ = precision_recall_curve(labels, values)
        area = f" (AUPRC {average_precision_score(labels, values):.4f})" if labels.any() else ""
        axis.plot(recall, precision, color=color, label=name + area)
    if baseline_scores is not None:  # the baseline flags yes/no: one point
        flagged = np.asarray(baseline_scores) > 0.5
        true_positives = np.sum(flagged & (labels == 1))
        axis.plot(true_positives / max(labels.sum(), 1), true_positives / max(flagged.sum(), 1), "s",
                  color="tab:orange", label="count-vector baseline")
    axis.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    written.append(_save(figure, axis, output_dir / "precision_recall.png"))

    finite = detectors[0][1]
    figure, axis = plt.subplots(figsize=(6, 4))
    bins = np.linspace(finite.min(), finite.max(), 60) if finite.max() > finite.min() else 10
    axis.hist(finite[labels == 0], bins=bins, alpha=0.6, label="normal", density=True)
    axis.hist(finite[labels == 1], bins=bins, alpha=0.6, label="anomalous", density=True)
    axis.axvline(threshold, color="black", linestyle=":", label="threshold")
    axis.set(xlabel="anomaly score", ylabel="density", title="Score distribution", yscale="log")
    written.append(_save(figure, axis, output_dir / "score_histogram.png"))
    return written


ROC_MIN_FPR = 1e-4  # the left edge of the ROC's logarithmic axis


def _finite(values) -> np.ndarray:
    """Scores with NaN/inf replaced by the highest finite score, so that the curves can be drawn."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    return np.where(ok, values, values[ok].max() if ok.any() else 0.0)


def _rates(flagged: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(false-positive rate, true-positive rate) of yes/no verdicts; 0 for a class that is absent."""
    normal, anomalous = labels == 0, labels == 1
    return (float(flagged[normal].mean()) if normal.any() else 0.0,
            float(flagged[anomalous].mean()) if anomalous.any() else 0.0)


def _save(figure, axis, path: Path) -> str:
    """Save with the legend under the axes, where it hides no curve and no operating point."""
    import matplotlib.pyplot as plt

    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return str(path)
