"""End to end on real HDFS sessions from the bundled sample: training learns, resumes, exports reloadable models."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

import run_mlm_logs


def eval_history(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "eval_loss" in entry]


def test_eval_loss_falls_well_below_its_start_and_beats_the_baseline(trained_model_dir):
    history = eval_history(trained_model_dir)
    assert history[0]["step"] == 0  # --eval_on_start: the untrained model's loss
    assert history[-1]["eval_loss"] < 0.6 * history[0]["eval_loss"]
    results = json.loads((trained_model_dir / "eval_results.json").read_text())
    assert results["eval_accuracy"] > results["eval_baseline_accuracy"] + 0.2
    for name in ("eval_top_5_accuracy", "eval_perplexity", "eval_loss"):
        assert name in results
    written = {p.name for p in trained_model_dir.iterdir()}
    assert {"train_results.json", "eval_results.json", "all_results.json"} <= written


def test_best_model_reloads_with_identical_outputs(trained_model_dir):
    best_dir = trained_model_dir / "best_model"
    history = eval_history(trained_model_dir)
    best = min(history, key=lambda entry: entry["eval_loss"])
    # best_model holds exactly the weights of the checkpoint written at the best evaluation
    checkpoint = trained_model_dir / f"checkpoint-{best['step']}"
    if checkpoint.exists():
        exported, saved = load_file(best_dir / "model.safetensors"), load_file(checkpoint / "model.safetensors")
        assert exported.keys() == saved.keys()
        assert all(torch.equal(exported[k], saved[k]) for k in exported)
    tokenizer = AutoTokenizer.from_pretrained(best_dir)
    first = AutoModelForMaskedLM.from_pretrained(best_dir).eval()
    second = AutoModelForMaskedLM.from_pretrained(best_dir).eval()
    batch = tokenizer(["22 5 5 5 11 9 11 9 26 26 26", "5 22 5 5 11 9"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
    with torch.no_grad():
        assert torch.equal(first(**batch).logits, second(**batch).logits)
    config = yaml_config(best_dir)
    assert config["model"]["hidden_size"] == first.config.hidden_size == 32


def yaml_config(directory: Path) -> dict:
    import yaml

    return yaml.safe_load((directory / "training_config.yaml").read_text())


def test_unseen_events_map_to_unk_in_the_saved_tokenizer(trained_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(trained_model_dir)
    ids = tokenizer("5 999")["input_ids"]
    assert ids == [tokenizer.cls_token_id, tokenizer.convert_tokens_to_ids("5"), tokenizer.unk_token_id,
                   tokenizer.sep_token_id]


@pytest.mark.slow
def test_resume_from_the_latest_checkpoint_continues_training(tmp_path):
    common = ["--config", "configs/tiny.yaml", "--output-dir", str(tmp_path / "run"),
              "--data_cache_dir", str(tmp_path / "cache"), "--save_steps", "10", "--eval_steps", "10",
              "--disable_tqdm", "true", "--report_to", "none", "--max_train_samples", "800"]
    assert run_mlm_logs.main(common + ["--max_steps", "20"]) == 0
    assert run_mlm_logs.main(common + ["--max_steps", "30", "--resume_from_checkpoint"]) == 0
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 30
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == sorted(set(steps))  # steps 1-20 were not trained again


@pytest.mark.slow
def test_reference_config_trains_a_few_steps_on_cpu(tmp_path):
    exit_code = run_mlm_logs.main([
        "--config", "configs/logbert-base.yaml", "--output-dir", str(tmp_path / "base"),
        "--data_cache_dir", str(tmp_path / "cache"), "--max_steps", "2", "--max_train_samples", "128",
        "--max_eval_samples", "16", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
        "--disable_tqdm", "true", "--logging_steps", "1",
    ])
    assert exit_code == 0
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (768, 12, 12)
    training = yaml_config(tmp_path / "base")["training"]
    assert training["learning_rate"] == 2e-5 and training["per_device_train_batch_size"] == 32
    assert training["lr_scheduler_type"] == "cosine" and training["weight_decay"] == 0.01
