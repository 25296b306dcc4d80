"""Detection on files: the best-F1 threshold search and the evaluation plots."""

import numpy as np
import pytest

from logbert.evaluation import best_f1_threshold


def _best_f1_by_trying_every_score(scores, labels):
    """The search best_f1_threshold replaces: F1 at `score > t` for every distinct score t, lowest t on ties."""
    def f1(threshold):
        flagged = scores > threshold
        true_positives = np.sum(flagged & (labels == 1))
        return 2 * true_positives / (flagged.sum() + labels.sum()) if true_positives else 0.0

    return float(max(np.unique(scores), key=f1))


def test_best_f1_threshold_is_strict_and_counts_ties_by_hand():
    # > 0 flags 1.0, 1.0, 2.0: 2 of 3 anomalies, F1 4/6; > 1 flags only 2.0: F1 2/4; > 2 flags nothing
    scores, labels = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 0.0]), np.array([0, 1, 1, 0, 1, 0])
    assert best_f1_threshold(scores, labels) == 0.0


def test_equal_f1_goes_to_the_lowest_threshold():
    # > 3 flags one anomaly alone (F1 2/3); > 0 flags four sessions, both anomalies among them (F1 4/6)
    scores, labels = np.array([4.0, 3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 0, 1, 0])
    assert best_f1_threshold(scores, labels) == 0.0


def test_perfect_separation_puts_the_threshold_at_the_highest_normal_score():
    assert best_f1_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.2


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_matches_trying_every_score(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        size = rng.integers(1, 40)
        scores = rng.integers(0, rng.integers(1, 8), size) / 2  # few distinct values: many ties
        labels = rng.integers(0, 2, size)
        assert best_f1_threshold(scores, labels) == _best_f1_by_trying_every_score(scores, labels)
