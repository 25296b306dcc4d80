"""The evaluate metric modules shipped in the repo, and the Trainer's metric hooks."""

import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from logbert.metrics import build_compute_metrics, load_metric, preprocess_logits_for_metrics


def test_masked_event_accuracy_module_loads_offline_by_path():
    metric = load_metric("masked_event_accuracy")
    result = metric.compute(predictions=[[5, 9, 7], [9, 5, 7], [7, 9, 5]], references=[5, 5, 5], top_k=[1, 2, 3])
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["top_2_accuracy"] == pytest.approx(2 / 3)
    assert result["top_3_accuracy"] == 1.0
    assert result["num_masked"] == 3


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="no metric module"):
        load_metric("accuracy")


@pytest.mark.parametrize("sparse", [True, False])
def test_logits_are_reduced_to_labels_nll_and_top_k(sparse):
    labels = torch.tensor([[-100, 3, -100, 1], [2, -100, -100, -100]])
    dense = torch.randn(2, 4, 6)
    logits = dense[labels != -100] if sparse else dense
    reduced = preprocess_logits_for_metrics(logits, labels, max_k=2)
    assert reduced.shape == (2, 4, 4)  # batch-shaped, so it can be padded and gathered across processes
    assert (reduced[labels == -100] == -100).all()
    rows = reduced[labels != -100]
    assert rows[:, 0].tolist() == [3.0, 1.0, 2.0]
    expected_nll = -torch.log_softmax(dense[labels != -100], -1)[torch.arange(3), torch.tensor([3, 1, 2])]
    assert torch.allclose(rows[:, 1], expected_nll, atol=1e-5)
    assert rows[:, 2].tolist() == dense[labels != -100].argmax(-1).float().tolist()


def test_compute_metrics_reports_accuracy_perplexity_and_baseline():
    # true ids 5, 5, 7; the model's best guesses 5, 9, 7; gathered padding rows (-100) are ignored
    rows = np.array([[5, 0.1, 5, 9], [5, 2.0, 9, 5], [7, 0.3, 7, 5], [-100, -100, -100, -100]], dtype=float)
    metrics = build_compute_metrics([1, 2], most_frequent_id=5)(EvalPrediction(predictions=rows, label_ids=None))
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["top_2_accuracy"] == 1.0
    assert metrics["perplexity"] == pytest.approx(math.exp((0.1 + 2.0 + 0.3) / 3))
    assert metrics["baseline_accuracy"] == pytest.approx(2 / 3)


def test_anomaly_detection_module_on_hand_built_scores():
    metric = load_metric("anomaly_detection")
    scores = [0.1, 0.9, 0.8, 0.2, 0.8]
    labels = [0, 1, 1, 0, 0]
    result = metric.compute(predictions=scores, references=labels, threshold=0.5, projected_normal_count=300)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 1, 2, 0)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == 1.0
    assert result["fpr"] == pytest.approx(1 / 3)
    assert result["auroc"] == pytest.approx(5.5 / 6)  # the 0.8 tie counts half
    assert result["projected_false_positives"] == pytest.approx(100)
    assert result["projected_f1"] == pytest.approx(2 * (2 / 102) / (2 / 102 + 1))


def test_perfect_separation_has_unit_auroc_and_auprc():
    metric = load_metric("anomaly_detection")
    result = metric.compute(predictions=[0.1, 0.2, 0.8, 0.9], references=[0, 0, 1, 1], threshold=0.5)
    assert result["auroc"] == 1.0 and result["auprc"] == 1.0 and result["f1"] == 1.0


# ---- Detection metrics: scikit-learn inside the module, same numbers as the hand-written code it replaced ----------

def _hdfs_like_scores():
    """24,000 sessions like the HDFS test set scored with the known-normal gate: most normal scores exactly 0."""
    rng = np.random.default_rng(0)
    normal = np.where(rng.random(20000) < 0.9, 0.0, np.round(rng.gamma(2, 1, 20000), 1))
    abnormal = np.where(rng.random(4000) < 0.05, 0.0, np.round(rng.gamma(4, 1.5, 4000), 1))
    order = rng.permutation(24000)
    return np.r_[normal, abnormal][order], np.r_[np.zeros(20000, int), np.ones(4000, int)][order]


def _pairwise_auroc(scores, labels):
    """The Mann-Whitney definition, pair by pair: a tie counts half."""
    positive, negative = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(((positive > negative) + 0.5 * (positive == negative)).mean())


def _average_precision(scores, labels):
    """Precision at each distinct threshold, weighted by the recall it adds (the step-wise AUPRC)."""
    area, previous_recall = 0.0, 0.0
    for cut in np.unique(scores)[::-1]:
        flagged = scores >= cut
        true_positives = np.sum(flagged & (labels == 1))
        recall = true_positives / labels.sum()
        area += (recall - previous_recall) * true_positives / flagged.sum()
        previous_recall = recall
    return area


def test_ties_at_the_threshold_are_not_flagged():
    metric = load_metric("anomaly_detection")
    scores, labels = [0.0, 0.0, 1.0, 1.0, 2.0, 0.0], [0, 1, 1, 0, 1, 0]
    result = metric.compute(predictions=scores, references=labels, threshold=1.0)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (1, 0, 3, 2)  # only the 2.0 is flagged
    assert (result["precision"], result["recall"], result["f1"], result["fpr"]) == (1.0, pytest.approx(1 / 3),
                                                                                    pytest.approx(0.5), 0.0)
    assert result["auroc"] == pytest.approx(6.5 / 9)  # by hand: 3 + 2.5 + 1 of 9 pairs
    assert result["auprc"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)  # recall steps of 1/3 at precision 1, 2/3, 1/2


def test_threshold_zero_flags_every_positive_score():
    # the known-normal gate with every calibration session known: threshold 0, any new multiset is flagged
    metric = load_metric("anomaly_detection")
    result = metric.compute(predictions=[0.0, 0.0, 0.0, 3.0, 0.5], references=[0, 0, 1, 1, 0], threshold=0.0,
                            projected_normal_count=1000)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (1, 1, 2, 1)
    assert result["auroc"] == pytest.approx(4 / 6) and result["auprc"] == pytest.approx(0.7)
    assert result["projected_false_positives"] == pytest.approx(1000 / 3)
    assert result["projected_f1"] == pytest.approx(2 * (1 / (1 + 1000 / 3)) * 0.5 / (1 / (1 + 1000 / 3) + 0.5))


def test_one_class_gives_nan_areas_and_zero_rates_not_an_error():
    metric = load_metric("anomaly_detection")
    normal_only = metric.compute(predictions=[0.1, 0.7], references=[0, 0], threshold=0.5)
    assert math.isnan(normal_only["auroc"]) and math.isnan(normal_only["auprc"])
    assert normal_only["precision"] == 0.0 and normal_only["recall"] == 0.0 and normal_only["fpr"] == 0.5
    nothing_flagged = metric.compute(predictions=[1.0] * 6, references=[0, 1, 0, 1, 0, 0], threshold=1.0)
    assert nothing_flagged["f1"] == 0.0 and nothing_flagged["auroc"] == 0.5
    assert nothing_flagged["auprc"] == pytest.approx(1 / 3)


def test_hdfs_like_scores_with_heavy_ties_match_the_definitions_and_the_previous_figures():
    scores, labels = _hdfs_like_scores()
    assert np.mean(scores == 0) > 0.7  # heavy ties, as the known-normal gate gives
    metric = load_metric("anomaly_detection")
    result = metric.compute(predictions=scores.tolist(), references=labels.tolist(), threshold=2.0,
                            projected_normal_count=553366)
    flagged = scores > 2.0
    tp, fp = np.sum(flagged & (labels == 1)), np.sum(flagged & (labels == 0))
    assert (result["tp"], result["fp"]) == (tp, fp)
    assert result["precision"] == pytest.approx(tp / (tp + fp)) and result["recall"] == pytest.approx(tp / 4000)
    assert result["fpr"] == pytest.approx(fp / 20000)
    assert result["auroc"] == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)
    assert result["auprc"] == pytest.approx(_average_precision(scores, labels), abs=1e-12)
    # The figures the hand-written module gave on these scores, before scikit-learn (to the 4th decimal and beyond).
    previous = {"precision": 0.824851, "recall": 0.8995, "f1": 0.860560, "fpr": 0.0382, "auroc": 0.963465,
                "auprc": 0.910030, "projected_f1": 0.250413}
    assert {key: round(result[key], 6) for key in previous} == previous


def test_best_f1_threshold_on_hdfs_like_scores_is_the_one_trying_every_score_found():
    from logbert.calibration import best_f1_threshold

    scores, labels = _hdfs_like_scores()
    assert best_f1_threshold(scores, labels) == 2.2  # what the per-candidate search returned on these scores
