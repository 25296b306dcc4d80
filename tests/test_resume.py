"""logbert.resume: which checkpoint a run resumes, which it refuses, and which output folders it will not reuse."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import run_mlm_logs
from logbert.resume import (ResumeError, check_checkpoint_fits, checkpoint_tokenizer_path, prepare_output_dir,
                            resolve_checkpoint)

REPO = Path(__file__).resolve().parents[1]


def write_checkpoint(path: Path, complete: bool = True, **config) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "config.json").write_text(json.dumps({"hidden_size": 32, "max_position_embeddings": 128, **config}))
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    return path


def test_an_output_folder_holding_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "out"
    stale = write_checkpoint(out / "checkpoint-60")
    (out / "known_count_vectors.npy").write_bytes(b"old")
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(ResumeError, match="holds another run.*--overwrite_output_dir"):
        prepare_output_dir(str(out), resuming=False, overwrite=False)
    prepare_output_dir(str(out), resuming=True, overwrite=False)  # resuming: left as it is
    assert stale.exists()

    prepare_output_dir(str(out), resuming=False, overwrite=True)
    assert not stale.exists() and not (out / "known_count_vectors.npy").exists()
    assert (out / "notes.txt").exists()  # only the run's own files go


def test_an_empty_or_missing_output_folder_is_fine_and_a_file_is_refused(tmp_path):
    prepare_output_dir(str(tmp_path / "new"), resuming=False, overwrite=False)
    (tmp_path / "empty").mkdir()
    prepare_output_dir(str(tmp_path / "empty"), resuming=False, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResumeError, match="is a file"):
        prepare_output_dir(str(tmp_path / "file"), resuming=False, overwrite=False)


def test_an_explicit_incomplete_checkpoint_is_one_clear_error(tmp_path):
    cut = write_checkpoint(tmp_path / "checkpoint-10", complete=False)
    with pytest.raises(ResumeError, match="incomplete checkpoint"):
        resolve_checkpoint(str(cut), str(tmp_path))
    with pytest.raises(ResumeError, match="no such folder"):
        resolve_checkpoint(str(tmp_path / "checkpoint-99"), str(tmp_path))
    good = write_checkpoint(tmp_path / "checkpoint-5")
    assert resolve_checkpoint("latest", str(tmp_path)) == str(good)
    assert resolve_checkpoint(None, str(tmp_path)) is None


def test_a_checkpoint_of_another_model_shape_is_refused_before_loading(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "checkpoint-5")
    fits = SimpleNamespace(hidden_size=32, max_position_embeddings=128)
    check_checkpoint_fits(str(checkpoint), fits)
    with pytest.raises(ResumeError, match="hidden_size 32 \\(this run: 64\\)"):
        check_checkpoint_fits(str(checkpoint), SimpleNamespace(hidden_size=64, max_position_embeddings=128))
    assert checkpoint_tokenizer_path(str(checkpoint)) is None
    (checkpoint / "tokenizer.json").write_text("{}")
    assert checkpoint_tokenizer_path(str(checkpoint)) == str(checkpoint)


TINY = ["--config", str(REPO / "configs" / "tiny.yaml"), "--disable_tqdm", "true", "--max_steps", "4",
        "--save_steps", "2", "--eval_steps", "2", "--max_train_samples", "200", "--max_eval_samples", "40"]


@pytest.mark.slow
def test_rerunning_into_a_used_folder_and_resuming_with_other_data(tmp_path, write_jsonl, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = [*TINY, "--output_dir", str(out), "--data_cache_dir", str(cache)]
    assert run_mlm_logs.main(common) == 0
    first_vocabulary = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]

    assert run_mlm_logs.cli(common) == 2  # a second run into the same folder is refused, in one line
    assert "holds another run" in capsys.readouterr().err

    # Resuming on other data keeps the checkpoint's vocabulary: the embedding rows are indexed by it.
    other = write_jsonl("other.jsonl", [{"event_sequence": ["90", "91", "5", "5"]}] * 50)
    assert run_mlm_logs.main([*common, "--train_file", str(other), "--max_steps", "6",
                              "--resume_from_checkpoint", str(out / "checkpoint-4")]) == 0
    assert json.loads((out / "tokenizer.json").read_text())["model"]["vocab"] == first_vocabulary

    # Another width than the checkpoint's is one line, not a size-mismatch traceback.
    assert run_mlm_logs.cli([*common, "--hidden_size", "64", "--resume_from_checkpoint"]) == 2
    assert "hidden_size 32 (this run: 64)" in capsys.readouterr().err


def test_a_model_worse_than_the_baseline_is_warned_about_loudly(caplog):
    run_mlm_logs.warn_if_below_baseline({"eval_accuracy": 0.0028, "eval_baseline_accuracy": 0.137})
    assert "WORSE than always guessing" in caplog.text
    caplog.clear()
    run_mlm_logs.warn_if_below_baseline({"eval_accuracy": 0.9, "eval_baseline_accuracy": 0.137})
    assert caplog.text == ""


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_stops_before_the_export(tmp_path, monkeypatch, caplog):
    import os
    import signal

    # The signal arrives as the final evaluation ends (warn_if_below_baseline reads its metrics).
    monkeypatch.setattr(run_mlm_logs, "warn_if_below_baseline", lambda metrics: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "out"
    assert run_mlm_logs.main([*TINY, "--output_dir", str(out), "--data_cache_dir", str(tmp_path / "cache"),
                              "--eval_steps", "100"]) == 0
    assert "Stopped by SIGTERM during the final evaluation" in caplog.text
    assert not (out / "config.json").exists()  # no half-finished final model
    assert (out / "checkpoint-4" / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from logbert.trainer import LogBertTrainer

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "checkpoint-2"))

    monkeypatch.setattr(LogBertTrainer, "_save_checkpoint", full_disk)
    assert run_mlm_logs.cli([*TINY, "--output_dir", str(tmp_path / "out"),
                             "--data_cache_dir", str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "No space left on device" in error and "checkpoint-2" in error
