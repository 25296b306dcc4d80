"""Pushing to the hub: one upload of the exported folder, never a second one on top of the Trainer's."""

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from logbert.hub import PUSH_IGNORE, REQUIRED_FILES, push_model_folder


class FakeHub:
    """Stands in for HfApi (ours and the Trainer's): records what would be sent, sends nothing."""

    def __init__(self):
        self.created, self.uploads = [], []

    def create_repo(self, repo_id, **kwargs):
        self.created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"user/{repo_id}")

    def upload_folder(self, run_as_future=False, **kwargs):
        self.uploads.append(kwargs)
        commit = SimpleNamespace(repo_url=f"https://huggingface.co/{kwargs['repo_id']}")
        if not run_as_future:
            return commit
        future = Future()  # the Trainer's background pushes
        future.set_result(commit)
        return future


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: fake)  # logbert.hub
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: fake)  # the Trainer's pushes
    return fake


def test_push_uploads_the_folder_once_without_checkpoints(tmp_path, hub):
    for name in REQUIRED_FILES:
        (tmp_path / name).write_text("{}")
    url = push_model_folder(tmp_path, "org/logbert-hdfs", private=True)
    assert url == "https://huggingface.co/org/logbert-hdfs"
    assert hub.created == ["org/logbert-hdfs"]
    (upload,) = hub.uploads
    assert upload["folder_path"] == str(tmp_path) and upload["repo_id"] == "org/logbert-hdfs"
    assert {"checkpoint-*", "best_model/**", "training_args.bin"} <= set(upload["ignore_patterns"]) <= set(PUSH_IGNORE)


@pytest.mark.slow  # trains a tiny model for a few steps: about 30 s
def test_training_with_push_to_hub_uploads_the_exported_folder_exactly_once(tmp_path, hub):
    import run_mlm_logs

    output_dir = tmp_path / "logbert-hdfs"
    assert run_mlm_logs.main([
        "--config", "configs/tiny.yaml", "--output-dir", str(output_dir), "--data_cache_dir", str(tmp_path / "cache"),
        "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", "--disable_tqdm", "true",
        "--report_to", "none", "--push_to_hub", "true", "--hub_model_id", "org/logbert-hdfs",
    ]) == 0
    assert len(list(output_dir.glob("checkpoint-*"))) == 2  # two saves, and the Trainer pushed at neither
    (upload,) = hub.uploads
    assert upload["folder_path"] == str(output_dir) and upload["repo_id"] == "org/logbert-hdfs"
    assert "threshold" in (output_dir / "config.json").read_text()  # what went up is the calibrated folder
