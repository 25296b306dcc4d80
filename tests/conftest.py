"""Shared fixtures: small hand-built session files in tmp_path, and the bundled HDFS sample."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from logbert.config import SAMPLE_TRAIN_FILE, DataArguments

CLS, SEP, PAD = 101, 102, 0  # the seed's token-id convention


def token_session(events: list[int], session_id: str | None = None, padding: int = 0, **fields) -> dict:
    """A session object as the seed writes it: [CLS] events [SEP], optionally right-padded with mask 0s."""
    token_ids = [CLS, *events, SEP]
    record = {
        "token_ids": token_ids + [PAD] * padding,
        "attention_mask": [1] * len(token_ids) + [0] * padding,
        "event_sequence": [str(e) for e in events],
        **fields,
    }
    if session_id is not None:
        record["session_id"] = session_id
    return record


@pytest.fixture(name="token_session")
def token_session_fixture() -> Callable[..., dict]:
    return token_session


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[..., Path]:
    """write_json(name, document) -> path; name may hold sub-folders."""

    def write(name: str, document) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """write_jsonl(name, records) -> path, one JSON object per line."""

    def write(name: str, records: list) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_bytes(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def data_args(tmp_path: Path) -> Callable[..., DataArguments]:
    """data_args(*files, **overrides): arguments with the cache in tmp_path and no validation split by default."""

    def make(*files: Path, **overrides) -> DataArguments:
        settings = {
            "train_file": [str(f) for f in files] or None,
            "data_cache_dir": str(tmp_path / "cache"),
            "max_seq_length": 64,
            "validation_split_percentage": 0.0,
        }
        settings.update(overrides)
        return DataArguments(**settings)

    return make


@pytest.fixture(scope="session")
def sample_file() -> Path:
    return Path(SAMPLE_TRAIN_FILE)


@pytest.fixture(scope="session")
def sample_sessions(sample_file: Path) -> list[list[str]]:
    """The bundled HDFS training sessions as lists of event IDs, read without the package."""
    lines = sample_file.read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.strip()]


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """A tiny LogBERT trained for a few dozen steps on the bundled sample, with a calibrated threshold.

    Trained once per test session and shared: tests must not modify it (copy it first).
    """
    import run_mlm_logs

    output_dir = tmp_path_factory.mktemp("trained") / "model"
    exit_code = run_mlm_logs.main([
        "--config", "configs/tiny.yaml", "--output-dir", str(output_dir),
        "--data_cache_dir", str(output_dir.parent / "cache"), "--max_steps", "60", "--eval_steps", "30",
        "--save_steps", "30", "--disable_tqdm", "true", "--report_to", "none", "--seed", "7",
        "--eval_on_start", "true",
    ])
    assert exit_code == 0
    return output_dir
