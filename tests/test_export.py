"""Model folders: the model card's metadata, file modes, atomic export."""

import json

import numpy as np
import pytest
from huggingface_hub import ModelCard

from logbert.export import write_model_card


def _model_folder(path, anomaly_threshold=0.0, detection=True):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "hidden_size": 32, "anomaly_threshold": anomaly_threshold, "model_only_threshold": 3.25,
        "score_name": "next_max_nll", "threshold_target_fpr": 0.001, "calibration_sessions": 500,
        "num_candidates": 5}))
    (path / "data_summary.json").write_text(json.dumps({"train_sessions": 100, "datasets": ["org/hdfs-sessions"]}))
    (path / "eval_results.json").write_text(json.dumps({"eval_loss": 1.5, "eval_accuracy": 0.75}))
    np.save(path / "known_count_vectors.npy", np.array([7, 11]))  # the known-normal gate is on
    if detection:
        (path / "detection_metrics.json").write_text(json.dumps({
            "precision": 0.9, "recall": 0.8, "f1": 0.85, "auroc": 0.97, "auprc": float("nan"), "tp": 3,
            "score_name": "next_max_nll", "test_normal": 500, "test_anomalous": 400}))
    return path


def test_model_card_metadata_loads_back_with_huggingface_hub(tmp_path):
    from transformers.pipelines import SUPPORTED_TASKS

    card = ModelCard.load(write_model_card(_model_folder(tmp_path / "logbert-hdfs")))
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag in SUPPORTED_TASKS  # a task the hub knows; ours is a tag
    assert {"log-anomaly-detection", "logbert", "masked-language-modeling", "log-anomaly"} <= set(card.data.tags)
    assert card.data.datasets == ["org/hdfs-sessions"]
    results = {result.metric_name: result for result in card.data.eval_results}
    assert set(results) == {"precision", "recall", "f1", "auroc"}  # NaN AUPRC and counts left out
    assert results["f1"].metric_value == 0.85 and results["auroc"].metric_type == "roc_auc"
    assert results["f1"].task_type == "log-anomaly-detection" and results["f1"].dataset_split == "test"
    assert results["f1"].dataset_type == "org/hdfs-sessions" and "400 anomalous" in results["f1"].dataset_name
    assert card.data.model_name == "logbert-hdfs"
    assert "eval_accuracy" in card.text and "train_sessions" in card.text


def test_model_card_explains_a_zero_threshold(tmp_path):
    text = ModelCard.load(write_model_card(_model_folder(tmp_path / "model"))).text
    assert "A threshold of 0 means" in text and "any session with a new multiset of events is flagged" in text
    assert "`model_only_threshold` = 3.25" in text


def test_model_card_explains_a_calibrated_threshold_and_has_no_model_index_without_test_metrics(tmp_path):
    card = ModelCard.load(write_model_card(_model_folder(tmp_path / "model", 2.5, detection=False)))
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "strictly above `anomaly_threshold` = 2.5" in card.text and "target false-positive rate" in card.text
    assert "A threshold of 0 means" not in card.text
