"""A label-free threshold that extrapolates the upper tail of normal scores: peaks over threshold (SPOT).

A false-positive rate of 0.001 cannot be read off ~500 normal scores as a quantile: the empirical 99.9% quantile
of 500 values is their maximum, set by one unusual session. Extreme value theory says the excesses over a high
enough initial threshold follow a generalized Pareto distribution (Pickands-Balkema-de Haan); fitting it to the
top `tail_fraction` of the normal scores gives the score exceeded with probability `target_fpr` even beyond the
data (Siffer et al., "Anomaly Detection in Streams with Extreme Value Theory", KDD'17, eq. 1).

Training-time only: this module is not shipped with models (scipy is needed here, not at scoring time); the
calibration code calls `tail_threshold` and stores what it returns in config.json.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .scoring import SCORE_CEILING, calibrate_threshold

logger = logging.getLogger(__name__)

# Peaks (scores above the initial threshold) the fit needs: with fewer, the shape parameter is mostly noise.
MIN_PEAKS = 20
# The fit is poor, and the empirical quantile is used instead, when the Kolmogorov-Smirnov test rejects the fitted
# distribution for the peaks at this level, or when the fitted shape is beyond MAX_SHAPE (a tail so heavy that
# the variance is infinite: one more normal session could move the extrapolated threshold arbitrarily far).
MIN_KS_PVALUE = 0.05
MAX_SHAPE = 0.5
# Scores within this of the ceiling are sessions with an event the model gives no chance (unseen in training).
CEILING_MARGIN = 1e-3


class CeilingThresholdError(ValueError):
    """The threshold would sit at the score ceiling: no session could ever be flagged."""


def tail_threshold(normal_scores, target_fpr: float, tail_fraction: float = 0.1, min_peaks: int = MIN_PEAKS,
                   ceiling: float = SCORE_CEILING, min_ks_pvalue: float = MIN_KS_PVALUE,
                   max_shape: float = MAX_SHAPE) -> dict[str, Any]:
    """The score that normal sessions exceed with probability `target_fpr`, from a fit of their upper tail.

    Args:
        normal_scores: (N,) scores of held-out normal sessions (higher = more anomalous). Scores at the ceiling
            (sessions with an event unseen in training) are left out: they say nothing about the model's
            surprise, and they would put the threshold on the ceiling.
        target_fpr: the share of normal sessions allowed above the threshold.
        tail_fraction: the share of the scores above the initial threshold (their excesses are fitted).
        min_peaks: the fewest excesses a fit is tried with.
        ceiling: the highest score a session can get (`scoring.SCORE_CEILING`).
        min_ks_pvalue, max_shape: what a usable fit must pass (see MIN_KS_PVALUE, MAX_SHAPE).
    Returns:
        {"threshold", "threshold_method": "gpd_tail" | "empirical", "tail_fit": {...} the fitted parameters and
        the checks, or why the empirical quantile was used}. JSON-serialisable, for config.json.
    Raises:
        CeilingThresholdError: the threshold would be at the ceiling (every score left is there).
    """
    scores = np.asarray(normal_scores, dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError("normal scores must be finite: a NaN score means a broken model, not a normal session")
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1) for a tail fit, got {target_fpr}")
    at_ceiling = scores >= ceiling - CEILING_MARGIN
    if at_ceiling.all():
        raise CeilingThresholdError(
            f"all {len(scores)} normal scores are at the score ceiling ({ceiling:.2f}): each of these sessions holds "
            "an event unseen in training, so a threshold here could never flag anything. Calibrate on sessions "
            "whose events were all seen in training.")
    if at_ceiling.any():
        logger.warning("%d of %d normal sessions score at the ceiling (an event unseen in training) and are left "
                       "out of the threshold.", int(at_ceiling.sum()), len(scores))
    scores = np.sort(scores[~at_ceiling])
    count = len(scores)
    details: dict[str, Any] = {"num_scores": count, "num_at_ceiling": int(at_ceiling.sum()),
                               "target_fpr": target_fpr, "tail_fraction": tail_fraction}

    def empirical(reason: str, warn: bool = True) -> dict[str, Any]:
        if warn:
            logger.warning("Tail fit not used (%s): the threshold is the empirical quantile of %d normal scores.",
                           reason, count)
        threshold = calibrate_threshold(scores, target_fpr)
        return _checked({"threshold": threshold, "threshold_method": "empirical",
                         "tail_fit": {**details, "reason": reason}}, ceiling)

    num_peaks = math.floor(tail_fraction * count)
    if target_fpr >= tail_fraction:  # the quantile lies inside the data: nothing to extrapolate
        return empirical(f"target_fpr {target_fpr} is not beyond the top {tail_fraction:.0%} of the scores", False)
    if num_peaks < min_peaks:
        return empirical(f"{num_peaks} peaks above the initial threshold, fewer than {min_peaks}")
    initial = float(scores[count - num_peaks - 1])  # the peaks are the num_peaks scores above it
    excesses = scores[count - num_peaks:] - initial
    excesses = excesses[excesses > 0]  # ties at the initial threshold are not peaks
    if len(excesses) < min_peaks:
        return empirical(f"{len(excesses)} distinct peaks above the initial threshold, fewer than {min_peaks}")

    from scipy import stats

    try:
        shape, _, scale = stats.genpareto.fit(excesses, floc=0)
    except Exception as error:  # noqa: BLE001 - an optimiser failure is a poor fit, not a crash
        return empirical(f"the fit failed: {error}")
    ks_pvalue = float(stats.kstest(excesses, "genpareto", args=(shape, 0, scale)).pvalue)
    details.update({"initial_threshold": initial, "num_peaks": len(excesses), "shape": float(shape),
                    "scale": float(scale), "ks_pvalue": ks_pvalue})
    if not (np.isfinite(shape) and np.isfinite(scale) and scale > 0):
        return empirical(f"non-finite fit (shape {shape}, scale {scale})")
    if ks_pvalue < min_ks_pvalue:
        return empirical(f"the peaks do not follow the fitted distribution (KS p = {ks_pvalue:.3g} < {min_ks_pvalue})")
    if shape > max_shape:
        return empirical(f"shape {shape:.3g} > {max_shape}: too heavy a tail to extrapolate")
    # P(score > initial + y) = (peaks / count) * P(excess > y): solve for the target rate (SPOT, eq. 1).
    threshold = initial + float(stats.genpareto.isf(target_fpr * count / len(excesses), shape, 0, scale))
    return _checked({"threshold": threshold, "threshold_method": "gpd_tail", "tail_fit": details}, ceiling)


def _checked(result: dict[str, Any], ceiling: float) -> dict[str, Any]:
    """A threshold at the ceiling flags nothing: an error that says why. A tail reaching past it is capped."""
    if result["threshold"] >= ceiling - CEILING_MARGIN:
        if result["threshold_method"] == "empirical":
            raise CeilingThresholdError(
                f"the threshold is at the score ceiling ({ceiling:.2f}): the normal sessions scoring there hold "
                "events unseen in training, so nothing could be flagged. Calibrate on sessions whose events were all "
                "seen in training.")
        logger.warning("The fitted tail reaches the score ceiling at the target rate; the threshold is capped below "
                       "it, so that sessions with unseen events are still flagged.")
        result["threshold"] = ceiling - 2 * CEILING_MARGIN
    return result
