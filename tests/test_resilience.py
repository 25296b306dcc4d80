"""Crashes and preemption: resume after SIGKILL or SIGTERM, stop on divergence, never unpickle on load."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, TrainerControl, TrainerState, TrainingArguments

import run_mlm_logs
from logbert import export, resume
from logbert.callbacks import BestModelExportCallback, NonFiniteLossCallback, NonFiniteLossError
from logbert.resume import SeededCollate, find_latest_checkpoint, is_complete_checkpoint
from logbert.export import save_model_folder
from logbert.model import LogBertForMaskedLM

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 30
# 128 training sessions are 4 batches an epoch: checkpoint-10 falls mid-way through the third epoch, so a resume
# has to restore the data order of a later epoch, not just the first one.
TINY_RUN = ["--config", str(REPO / "configs" / "tiny.yaml"), "--report_to", "none", "--disable_tqdm", "true",
            "--max_steps", str(MAX_STEPS), "--save_steps", "10", "--eval_steps", "10", "--logging_steps", "10",
            "--dataloader_num_workers", "0", "--seed", "11", "--max_train_samples", "128",
            "--max_eval_samples", "64"]


def run_args(output_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [*TINY_RUN, "--output-dir", str(output_dir), "--data_cache_dir", str(cache_dir), *extra]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A 32-wide model gains nothing from more threads, and on a busy 2-core machine two threads per process spin
    # against each other (a 3 s run takes a minute). The same count in the subprocesses keeps the float
    # reductions, and so the weights of the runs compared, bit-identical.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def keep_sigterm_handler():
    # A run that ends in an exception never reaches on_train_end, where GracefulStopCallback gives SIGTERM back.
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir) -> Path:
    """The reference: the same run, never stopped."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    assert run_mlm_logs.main(run_args(output_dir, cache_dir)) == 0
    return output_dir


@pytest.fixture
def launch():
    """launch(output_dir, cache_dir) -> (process, log path): the tiny run as `python run_mlm_logs.py` would start it."""
    processes = []

    def start(output_dir: Path, cache_dir: Path) -> tuple[subprocess.Popen, Path]:
        log_path = output_dir.with_name(output_dir.name + ".log")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        with log_path.open("w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, str(REPO / "run_mlm_logs.py"), *run_args(output_dir, cache_dir)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        return processes[-1], log_path

    yield start
    for process in processes:  # a failed test must not leave its training running
        if process.poll() is None:
            process.kill()
            process.wait()


def tail(log_path: Path) -> str:
    return log_path.read_text()[-3000:]


def wait_for_checkpoint(process: subprocess.Popen, log_path: Path, checkpoint: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not is_complete_checkpoint(checkpoint):
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before {checkpoint.name}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {checkpoint.name} after {timeout} s:\n{tail(log_path)}")
        time.sleep(0.02)


def assert_same_weights(directory: Path, reference: Path) -> None:
    weights, expected = load_file(directory / "model.safetensors"), load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    different = [name for name in weights if not torch.equal(weights[name], expected[name])]
    assert not different, f"{len(different)} tensors differ from {reference}, e.g. {different[0]}"


def global_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


# ---- SIGKILL: resume from the last complete checkpoint ---------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_resumes_from_last_complete_checkpoint_to_identical_weights(tmp_path, cache_dir, uninterrupted,
                                                                               launch, monkeypatch):
    output_dir = tmp_path / "run"
    process, log_path = launch(output_dir, cache_dir)
    wait_for_checkpoint(process, log_path, output_dir / "checkpoint-10")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (output_dir / "model.safetensors").exists()  # it really died mid-run
    # A crash while checkpoint-20 was being written: weights on disk, trainer_state.json cut off.
    half_written = output_dir / "checkpoint-20"
    shutil.rmtree(half_written, ignore_errors=True)
    half_written.mkdir()
    shutil.copy(output_dir / "checkpoint-10" / "model.safetensors", half_written)
    (half_written / "trainer_state.json").write_text('{"global_step": 20, "log_hist')

    resumed_from, loads = [], []
    real_find, real_load = resume.find_latest_checkpoint, torch.load

    def find(directory):
        resumed_from.append(real_find(directory))
        return resumed_from[-1]

    def load(file, *args, **kwargs):
        loads.append((Path(file).name, kwargs.get("weights_only")))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(resume, "find_latest_checkpoint", find)
    monkeypatch.setattr(torch, "load", load)
    assert run_mlm_logs.main(run_args(output_dir, cache_dir, "--resume_from_checkpoint")) == 0

    assert resumed_from == [str(output_dir / "checkpoint-10")]
    assert global_step(output_dir) == MAX_STEPS
    # The optimizer, scheduler and RNG states are read with weights_only=True: no pickle from the checkpoint runs.
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {name for name, _ in loads}
    assert all(weights_only is True for _, weights_only in loads), loads
    # CPU, fixed seed: bit-identical to never having stopped, and the same best model.
    assert_same_weights(output_dir, uninterrupted)
    assert_same_weights(output_dir / "best_model", uninterrupted / "best_model")


def test_find_latest_checkpoint_skips_checkpoints_cut_off_while_saving(tmp_path):
    def checkpoint(step: int, weights: str | None = "model.safetensors", state: str | None = '{"global_step": 0}'):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if weights:
            (path / weights).write_bytes(b"weights")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    assert find_latest_checkpoint(tmp_path / "missing") is None
    checkpoint(9)
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-9")
    complete = checkpoint(10)  # newer by number, not by name: "checkpoint-10" < "checkpoint-9" as text
    checkpoint(20, state=None)  # died before trainer_state.json, which the Trainer writes last
    checkpoint(30, state='{"global_step": 30, "best_met')  # died while writing it
    checkpoint(40, state="")
    checkpoint(50, weights=None)  # the weights were never written
    checkpoint(60, weights="model-00001-of-00002.safetensors", state=None)  # a sharded save, cut off
    (tmp_path / "checkpoint-70.tmp").mkdir()
    (tmp_path / "checkpoint-80").write_text("not a folder")
    assert find_latest_checkpoint(tmp_path) == str(complete)
    assert not is_complete_checkpoint(tmp_path / "checkpoint-30")
    sharded = checkpoint(90, weights="model.safetensors.index.json")  # written after all the shards
    assert find_latest_checkpoint(tmp_path) == str(sharded)


# ---- SIGTERM: save, exit 0, resume -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_cleanly_and_the_run_resumes_to_the_end(tmp_path, cache_dir, uninterrupted,
                                                                                  launch):
    output_dir = tmp_path / "run"
    process, log_path = launch(output_dir, cache_dir)
    wait_for_checkpoint(process, log_path, output_dir / "checkpoint-10")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, tail(log_path)

    log = log_path.read_text()
    latest = Path(find_latest_checkpoint(output_dir))
    stopped_at = global_step(latest)
    assert 10 < stopped_at < MAX_STEPS  # saved at the step it stopped, not at the last save_steps
    assert latest.name == f"checkpoint-{stopped_at}"
    assert f"Stopped by SIGTERM during training (step {stopped_at})" in log
    assert "--resume_from_checkpoint" in log
    assert not (output_dir / "model.safetensors").exists()

    assert run_mlm_logs.main(run_args(output_dir, cache_dir, "--resume_from_checkpoint")) == 0
    assert global_step(output_dir) == MAX_STEPS
    assert_same_weights(output_dir, uninterrupted)


# ---- Divergence: a clear error, no NaN model -------------------------------------------------------------------------


def test_diverging_run_stops_with_a_clear_error_and_exports_nothing(tmp_path, cache_dir, capsys):
    # AdamW moves every weight by about the learning rate per step: 1e10 overflows float32 within two steps.
    output_dir = tmp_path / "run"
    exit_code = run_mlm_logs.cli(run_args(output_dir, cache_dir, "--learning_rate", "1e10", "--logging_steps", "1"))
    assert exit_code == 2
    assert "error: training diverged at step" in capsys.readouterr().err
    assert not (output_dir / "model.safetensors").exists()
    assert not (output_dir / "best_model").exists()
    assert find_latest_checkpoint(output_dir) is None


def test_nan_loss_after_a_good_checkpoint_keeps_it_and_the_best_model(tmp_path, cache_dir, capsys, monkeypatch):
    # From the 13th training step on the loss is NaN, so its gradients and then the weights are NaN: checkpoint-10
    # and best_model (exported at the step-10 evaluation) exist by then; step 20 must not write NaN over them.
    training_steps = itertools.count(1)
    forward = LogBertForMaskedLM.forward

    @functools.wraps(forward)  # the Trainer reads `labels` from the signature
    def nan_forward(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training and next(training_steps) > 12:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(LogBertForMaskedLM, "forward", nan_forward)
    output_dir = tmp_path / "run"
    assert run_mlm_logs.cli(run_args(output_dir, cache_dir)) == 2
    assert "error: training diverged at step 20" in capsys.readouterr().err
    assert find_latest_checkpoint(output_dir) == str(output_dir / "checkpoint-10")
    assert not (output_dir / "checkpoint-20").exists()
    assert not (output_dir / "model.safetensors").exists()
    best = load_file(output_dir / "best_model" / "model.safetensors")
    assert all(tensor.isfinite().all() for tensor in best.values())
    assert_same_weights(output_dir / "best_model", output_dir / "checkpoint-10")


def tiny_bert() -> BertForMaskedLM:
    config = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    return BertForMaskedLM(config)


def test_save_model_folder_refuses_non_finite_weights(tmp_path):
    model = tiny_bert()
    assert export.non_finite_parameters(model) == []
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight[0, 0] = float("inf")
        model.cls.predictions.transform.dense.bias[1] = float("nan")
    assert export.non_finite_parameters(model) == ["bert.encoder.layer.0.output.dense.weight",
                                                   "cls.predictions.transform.dense.bias"]
    with pytest.raises(ValueError, match="NaN/inf"):
        save_model_folder(model, tokenizer=None, directory=tmp_path / "best_model")
    assert not (tmp_path / "best_model").exists()


def callback_arguments(tmp_path, **state) -> tuple[TrainingArguments, TrainerState, TrainerControl]:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerState(**state), TrainerControl()


def test_non_finite_loss_or_grad_norm_stops_after_patience_logs_in_a_row(tmp_path):
    callback = NonFiniteLossCallback(patience=2)
    args, state, control = callback_arguments(tmp_path, global_step=7)
    callback.on_log(args, state, control, logs={"loss": 2.0, "grad_norm": float("inf")})
    callback.on_log(args, state, control, logs={"eval_loss": float("nan")})  # not a training log: ignored
    callback.on_log(args, state, control, logs={"loss": 2.0, "grad_norm": 1.0})  # finite again: starts over
    callback.on_log(args, state, control, logs={"loss": float("nan"), "grad_norm": 1.0})
    message = r"NaN/inf 2 logging steps in a row \(step 7: loss nan, grad_norm nan\)"
    with pytest.raises(NonFiniteLossError, match=message):
        callback.on_log(args, state, control, logs={"loss": float("nan"), "grad_norm": float("nan")})


def test_non_finite_weights_stop_training_at_the_next_log_eval_or_save_step(tmp_path):
    callback = NonFiniteLossCallback(patience=100)
    model = tiny_bert()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[3, 0] = float("nan")
    args, state, control = callback_arguments(tmp_path, global_step=5)
    callback.on_step_end(args, state, control, model=model)  # nothing is logged or saved this step: no check
    control.should_save = True
    with pytest.raises(NonFiniteLossError, match="step 5.*bert.embeddings.word_embeddings.weight"):
        callback.on_step_end(args, state, control, model=model)


def test_resumed_best_model_export_remembers_the_best_eval_loss(tmp_path):
    exported = []
    callback = BestModelExportCallback(lambda model, name, metrics: exported.append(metrics["eval_loss"]))
    history = [{"eval_loss": 1.5, "step": 10}, {"loss": 1.0, "step": 20}, {"eval_loss": 1.2, "step": 20}]
    args, state, control = callback_arguments(tmp_path, log_history=history, global_step=20)
    callback.on_train_begin(args, state, control)
    for loss in (1.3, float("nan"), 1.1, 1.15):
        callback.on_evaluate(args, state, control, metrics={"eval_loss": loss}, model=None)
    assert exported == [1.1]


def test_seeded_collate_is_reproducible_per_batch_and_leaves_the_global_rng_alone():
    collate = SeededCollate(lambda examples: torch.rand(4), seed=3)
    batch = [{"input_ids": [101, 5, 9, 102]}, {"input_ids": [101, 7, 102]}]
    state = torch.random.get_rng_state()
    first = collate(batch)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(collate(batch), first)  # no hidden state: a resumed run draws the same masks
    assert not torch.equal(collate(batch[:1]), first)
    collate.epoch = 1
    assert not torch.equal(collate(batch), first)  # a session is masked differently each epoch


# ---- Loading never unpickles -----------------------------------------------------------------------------------------


def test_models_and_checkpoints_are_saved_as_safetensors(uninterrupted):
    folders = [uninterrupted, uninterrupted / "best_model", *uninterrupted.glob("checkpoint-*")]
    assert len(folders) >= 3
    for folder in folders:
        assert (folder / "model.safetensors").is_file(), folder
        assert not list(folder.glob("pytorch_model*.bin")), folder
