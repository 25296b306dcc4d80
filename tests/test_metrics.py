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
