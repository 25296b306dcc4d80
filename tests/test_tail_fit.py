"""The peaks-over-threshold fit recovers known quantiles of synthetic scores, and refuses meaningless thresholds."""

import logging
import math

import numpy as np
import pytest
from scipy import stats

from logbert.scoring import SCORE_CEILING
from logbert.tail_fit import CeilingThresholdError, tail_threshold


def median_threshold(draw, count, target_fpr, seeds=range(10)):
    results = [tail_threshold(draw(np.random.default_rng(seed), count), target_fpr) for seed in seeds]
    assert all(r["threshold_method"] == "gpd_tail" for r in results)
    return float(np.median([r["threshold"] for r in results]))


def test_the_tail_fit_recovers_a_known_quantile_of_exponential_scores():
    # P(X > t) = exp(-t): the 0.001 upper quantile is log(1000) = 6.91
    assert median_threshold(lambda rng, n: rng.exponential(1.0, n), 5000, 0.001) == pytest.approx(
        math.log(1000), rel=0.05)


def test_the_tail_fit_recovers_a_known_quantile_of_pareto_scores():
    def draw(rng, n):
        return stats.genpareto.rvs(0.2, size=n, random_state=rng)

    assert median_threshold(draw, 5000, 0.001) == pytest.approx(stats.genpareto.isf(0.001, 0.2), rel=0.1)


def test_the_tail_fit_extrapolates_beyond_the_highest_score():
    # 500 scores cannot show a 1-in-10,000 rate: the empirical quantile is their maximum (~6.8); the fit is not.
    def draw(rng, n):
        return rng.exponential(1.0, n)

    highest = np.median([draw(np.random.default_rng(seed), 500).max() for seed in range(10)])
    estimate = median_threshold(draw, 500, 0.0001)
    assert estimate > highest + 1
    assert estimate == pytest.approx(math.log(10_000), rel=0.15)


def test_the_fit_returns_its_method_and_parameters():
    result = tail_threshold(np.random.default_rng(0).exponential(1.0, 1000), 0.001)
    fit = result["tail_fit"]
    assert result["threshold_method"] == "gpd_tail"
    assert fit["num_peaks"] == 100 and fit["num_scores"] == 1000 and fit["scale"] > 0
    assert abs(fit["shape"]) < 0.3 and fit["ks_pvalue"] >= 0.05
    assert fit["initial_threshold"] < result["threshold"]


def test_a_poor_fit_falls_back_to_the_empirical_quantile_with_a_warning(caplog):
    few = np.random.default_rng(0).exponential(1.0, 100)  # 10 peaks: too few
    with caplog.at_level(logging.WARNING, logger="logbert.tail_fit"):
        result = tail_threshold(few, 0.001)
    assert result["threshold_method"] == "empirical" and result["threshold"] == few.max()
    assert "fewer than 20" in result["tail_fit"]["reason"] and "Tail fit not used" in caplog.text
    # two clusters of scores: the peaks are not one generalized Pareto tail
    bimodal = np.concatenate([np.random.default_rng(1).normal(0, 0.1, 900), np.full(60, 5.0),
                              np.random.default_rng(2).normal(9, 0.01, 40)])
    result = tail_threshold(bimodal, 0.001)
    assert result["threshold_method"] == "empirical" and "KS" in result["tail_fit"]["reason"]


def test_scores_at_the_ceiling_are_left_out_and_a_ceiling_threshold_is_an_error():
    scores = np.random.default_rng(0).exponential(1.0, 1000)
    with_unseen = np.concatenate([scores, np.full(30, SCORE_CEILING)])  # sessions with an unseen event
    result = tail_threshold(with_unseen, 0.001)
    assert result["threshold"] == pytest.approx(tail_threshold(scores, 0.001)["threshold"])
    assert result["tail_fit"]["num_at_ceiling"] == 30
    with pytest.raises(CeilingThresholdError, match="unseen in training"):
        tail_threshold(np.full(500, SCORE_CEILING), 0.001)


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="finite"):
        tail_threshold(np.array([1.0, np.nan, 2.0]), 0.001)
