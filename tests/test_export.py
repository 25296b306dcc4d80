"""Model folders: the model card's metadata, file modes, atomic export."""

import json
import os
from collections import Counter

import numpy as np
import pytest
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from logbert import export
from logbert.config import ModelArguments
from logbert.data import EVENTS_KIND
from logbert.export import save_model_folder, write_model_card
from logbert.model import build_model
from logbert.tokenizer import build_event_tokenizer


def _model_folder(path, anomaly_threshold=0.0, detection=True):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "hidden_size": 32, "anomaly_threshold": anomaly_threshold, "model_only_threshold": 3.25,
        "score_name": "next_max_nll", "threshold_target_fpr": 0.001, "calibration_sessions": 500,
        "num_candidates": 5, "scoring_mode": "linear", "next_event_window": 30, "threshold_method": "empirical"}))
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
    assert card.data.eval_results is None and "model-index" not in str(card) and "model_name" not in str(card)
    assert "strictly above `anomaly_threshold` = 2.5" in card.text and "target false-positive rate" in card.text
    assert "A threshold of 0 means" not in card.text
    # the settings the thresholds were calibrated under, so that a reader scores the same way
    assert "| scoring_mode | linear |" in card.text and "| next_event_window | 30 |" in card.text
    assert "| threshold_method | empirical |" in card.text


# ---- Exporting a model folder: readable files, never half written ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    tokenizer = build_event_tokenizer(Counter({"5": 3, "22": 2, "11": 1}))
    model = build_model(ModelArguments(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=16, max_position_embeddings=16), tokenizer, EVENTS_KIND)
    return model, tokenizer


def _weights(directory):
    return load_file(directory / "model.safetensors")


def test_exported_files_get_the_mode_open_gives_not_0600(tmp_path, tiny_model):
    previous = os.umask(0o022)
    try:
        folder = save_model_folder(*tiny_model, tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert modes["model.safetensors"] == 0o644  # safetensors alone writes it 0600 (a renamed temporary file)
    assert set(modes.values()) == {0o644}
    os.umask(0o027)
    try:
        folder = save_model_folder(*tiny_model, tmp_path / "group")
    finally:
        os.umask(previous)
    assert {path.stat().st_mode & 0o777 for path in folder.iterdir()} == {0o640}  # the umask is honoured


def test_a_killed_export_leaves_the_previous_model_whole(tmp_path, tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    folder = save_model_folder(model, tokenizer, tmp_path / "best_model")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def killed(directory):  # every file written, not yet moved into place
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "make_files_readable", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model, tokenizer, folder, metrics={"eval_loss": 0.5})
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best_model"]  # no temporary folder left
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model, tokenizer, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # no folder rather than one that looks complete


def test_a_new_export_replaces_the_old_folder_whole_and_clears_a_killed_ones_leftovers(tmp_path, tiny_model):
    import torch

    model, tokenizer = tiny_model
    folder = save_model_folder(model, tokenizer, tmp_path / "best_model")
    np.save(folder / "known_count_vectors.npy", np.array([1]))  # the old vocabulary's fingerprints
    leftover = tmp_path / ".best_model.99999.tmp"  # a SIGKILL during an earlier export
    (leftover / "config.json").parent.mkdir()
    (leftover / "config.json").write_text("{}")
    changed = build_model(ModelArguments(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=16, max_position_embeddings=16), tokenizer, EVENTS_KIND)
    with torch.no_grad():
        changed.bert.embeddings.word_embeddings.weight.add_(1.0)
    save_model_folder(changed, tokenizer, folder)
    assert not (folder / "known_count_vectors.npy").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best_model"]
    assert torch.equal(_weights(folder)["bert.embeddings.word_embeddings.weight"],
                       changed.bert.embeddings.word_embeddings.weight)


def test_export_into_the_training_output_folder_keeps_the_run_and_moves_config_json_last(tmp_path, tiny_model,
                                                                                         monkeypatch):
    model, tokenizer = tiny_model
    output_dir = tmp_path / "out"
    (output_dir / "checkpoint-10").mkdir(parents=True)
    (output_dir / "trainer_state.json").write_text("{}")
    save_model_folder(model, tokenizer, output_dir)
    assert {"checkpoint-10", "trainer_state.json", "config.json", "model.safetensors"} <= set(os.listdir(output_dir))
    assert not [name for name in os.listdir(output_dir) if name.endswith(".tmp")]

    moved = []
    real_replace = os.replace

    def killed_after_two(source, target):  # two files published into OUTPUT_DIR, then the process dies
        if os.path.dirname(target) == str(output_dir):
            if len(moved) == 2:
                raise KeyboardInterrupt
            moved.append(os.path.basename(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(model, tokenizer, output_dir)
    assert len(moved) == 2 and "config.json" not in moved
    assert not (output_dir / "config.json").exists()  # the old one went first: not a model that looks complete
    assert (output_dir / "checkpoint-10").is_dir() and (output_dir / "trainer_state.json").exists()
