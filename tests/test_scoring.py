"""Scores from hand-built logits, windows over long sessions, and the label-free threshold."""

import math

import numpy as np
import pytest
import torch

from logbert.scoring import (MIN_PROBABILITY, calibrate_threshold, count_vector_key, event_scores, masking_groups,
                             next_event_context, num_masking_replicas, session_scores, window_spans)


def test_event_scores_rank_probability_and_candidates():
    # vocabulary of 5: ids 0 and 1 are special (excluded), 2..4 are events
    logits = torch.tensor([[9.0, 9.0, 2.0, 1.0, 0.0],  # true 3: second best among events
                           [0.0, 0.0, 0.0, 0.0, 5.0]])  # true 4: best
    result = event_scores(logits, torch.tensor([3, 4]), excluded_ids=[0, 1], top_n=2)
    event_probs = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0)
    assert result["rank"].tolist() == [2, 1]
    assert result["probability"][0].item() == pytest.approx(event_probs[1].item(), rel=1e-6)
    assert result["nll"][0].item() == pytest.approx(-math.log(event_probs[1].item()), rel=1e-6)
    assert result["top_ids"][1, 0].item() == 4
    assert result["top_ids"][0].tolist() == [2, 3]  # the excluded specials are never candidates


def test_an_excluded_target_gets_the_ceiling_and_the_worst_rank():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    result = event_scores(logits, torch.tensor([0]), excluded_ids=[0], top_n=2)  # e.g. [UNK]
    assert result["probability"].item() == 0.0
    assert result["nll"].item() == pytest.approx(-math.log(MIN_PROBABILITY))
    assert result["rank"].item() == 4


def test_session_scores_follow_logbert_miss_criterion():
    nll = np.array([0.1, 2.0, 0.3, 5.0])
    rank = np.array([1, 3, 2, 9])
    unseen = np.array([False, False, True, False])
    scores = session_scores(nll, rank, unseen, num_candidates=2, end_nll=7.0)
    # misses: rank 3 > 2, the unseen event, rank 9 > 2
    assert scores["num_misses"] == 3
    assert scores["miss_ratio"] == pytest.approx(0.75)
    assert scores["mean_nll"] == pytest.approx(nll.mean())
    assert scores["max_nll"] == 5.0
    assert scores["combined"] == pytest.approx(5.0 + 7.0)  # the worst event plus the ending
    assert session_scores(nll, rank, unseen, 2, end_nll=1.0)["combined"] == pytest.approx(6.0)


def test_next_max_nll_is_the_worst_left_to_right_surprise_or_the_ending():
    nll, rank, unseen = np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]), np.zeros(3, bool)
    # entry 0 has no context (NaN from the pipeline) and is ignored; 4.0 at event 2 is the worst
    scores = session_scores(nll, rank, unseen, 5, end_nll=1.5, next_nll=np.array([np.nan, 0.5, 4.0]))
    assert scores["next_max_nll"] == pytest.approx(4.0)
    assert session_scores(nll, rank, unseen, 5, end_nll=6.0, next_nll=np.array([np.nan, 0.5, 4.0]))[
        "next_max_nll"] == pytest.approx(6.0)
    # one event: only the ending can surprise
    assert session_scores(nll[:1], rank[:1], unseen[:1], 5, end_nll=2.5,
                          next_nll=np.array([np.nan]))["next_max_nll"] == pytest.approx(2.5)


def test_count_vector_key_ignores_order_but_not_counts():
    assert count_vector_key([5, 22, 5, 11]) == count_vector_key([11, 5, 5, 22])
    assert count_vector_key([5, 22, 5, 11]) != count_vector_key([5, 22, 11])
    assert count_vector_key([5, 22, 5, 11]) != count_vector_key([5, 22, 22, 11])
    assert count_vector_key(np.array([7, 8], dtype=np.int32)) == count_vector_key([8, 7])


def test_session_scores_reject_an_empty_session():
    with pytest.raises(ValueError, match="at least one event"):
        session_scores(np.array([]), np.array([]), np.array([]), 5)


@pytest.mark.parametrize("num_events,window", [(1, 10), (10, 10), (11, 10), (300, 126), (1000, 7), (513, 510)])
def test_windows_score_every_event_exactly_once(num_events, window):
    spans = window_spans(num_events, window)
    scored = [i for span in spans for i in range(span.score_start, span.score_end)]
    assert scored == list(range(num_events))
    for span in spans:
        assert 0 <= span.start < span.end <= num_events
        assert span.end - span.start <= window
        assert span.start <= span.score_start < span.score_end <= span.end


def test_windows_give_scored_events_context_on_both_sides():
    spans = window_spans(300, 100)
    for span in spans[1:-1]:
        assert span.score_start - span.start >= 20 and span.end - span.score_end >= 20


def test_threshold_flags_at_most_the_target_share_of_normal_sessions():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=10_000)
    for target in (0.0, 0.001, 0.01, 0.1):
        threshold = calibrate_threshold(normal, target)
        flagged = np.mean(normal > threshold)
        assert flagged <= target
        assert flagged >= target - 1 / len(normal) - 1e-12
    assert calibrate_threshold(normal, 0.0) == normal.max()


def test_threshold_with_ties_never_exceeds_the_target():
    normal = np.array([1.0] * 50 + [2.0] * 50)
    threshold = calibrate_threshold(normal, 0.1)
    assert np.mean(normal > threshold) <= 0.1


def test_threshold_needs_sessions_and_a_valid_rate():
    with pytest.raises(ValueError):
        calibrate_threshold(np.array([]), 0.01)
    with pytest.raises(ValueError):
        calibrate_threshold(np.array([1.0]), 1.5)


@pytest.mark.parametrize("mlm_probability,replicas", [(0.15, 7), (0.5, 2), (1.0, 1), (0.1, 10), (0.3, 3)])
def test_replicas_mask_about_the_training_share(mlm_probability, replicas):
    assert num_masking_replicas(mlm_probability) == replicas
    with pytest.raises(ValueError, match="mlm_probability"):
        num_masking_replicas(0)


@pytest.mark.parametrize("num_events,window,replicas", [(1, 10, 7), (5, 10, 7), (7, 10, 7), (30, 10, 7),
                                                        (300, 126, 7), (1000, 510, 3), (513, 510, 7)])
def test_every_event_is_masked_exactly_once_per_replica_set(num_events, window, replicas):
    masked = []
    for span in window_spans(num_events, window):
        groups = masking_groups(span.score_start, span.score_end, replicas)
        assert len(groups) <= replicas and all(len(group) for group in groups)
        for group in groups:
            assert np.all((span.start <= group) & (group < span.end))  # masked inside the row's window
            assert len(set(group % replicas)) == 1  # one replica: one residue
            # about 1/k of the row is masked, as in training
            assert len(group) <= -(-(span.score_end - span.score_start) // replicas)
            masked.extend(group.tolist())
    assert sorted(masked) == list(range(num_events))  # each event once, none twice


def test_exhaustive_groups_mask_each_event_alone():
    groups = masking_groups(3, 9, None)
    assert [group.tolist() for group in groups] == [[i] for i in range(3, 9)]


def test_next_event_context_is_bounded_and_ends_right_before_the_event():
    for event_index in range(1, 40):
        start, end = next_event_context(event_index, 10)
        assert end == event_index and end - start == min(event_index, 10)
    with pytest.raises(ValueError):
        next_event_context(3, 0)
