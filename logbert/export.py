"""Model folders: model + tokenizer + resolved config + model card, identical on disk and on the hub."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

TRAINING_CONFIG_FILE = "training_config.yaml"
DATA_SUMMARY_FILE = "data_summary.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# One of these holds the weights of a checkpoint: single file or sharded (the index is written after the shards).
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")


def save_model_folder(model, tokenizer, directory: str | os.PathLike, training_config: dict[str, Any] | None = None,
                      metrics: dict[str, Any] | None = None, data_summary: dict[str, Any] | None = None) -> Path:
    """Write everything `from_pretrained(directory)` and the scoring pipeline need, plus a model card.

    Refuses to write a model whose weights are not finite: a NaN model must never become `best_model`.
    """
    directory = Path(directory)
    names = non_finite_parameters(model)
    if names:
        raise ValueError(f"refusing to export {directory}: parameter {names[0]} holds NaN/inf "
                         f"({len(names)} tensors in all)")
    directory.mkdir(parents=True, exist_ok=True)
    # Saving through the pipeline also writes its code (pipeline.py, scoring.py) and registers the
    # `log-anomaly` task in config.json, so `pipeline(model=directory, trust_remote_code=True)` works anywhere.
    from .pipeline import LogAnomalyPipeline

    LogAnomalyPipeline(model=model, tokenizer=tokenizer, device=model.device).save_pretrained(
        directory, safe_serialization=True)
    if training_config is not None:
        (directory / TRAINING_CONFIG_FILE).write_text(yaml.safe_dump(training_config, sort_keys=False))
    if data_summary is not None:
        (directory / DATA_SUMMARY_FILE).write_text(json.dumps(data_summary, indent=2))
    if metrics:  # the card is regenerated later (threshold calibration) from what the folder holds
        (directory / "eval_results.json").write_text(json.dumps(metrics, indent=2, default=str))
    write_model_card(directory, metrics=metrics)
    return directory


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters holding NaN or inf; one device sync for the whole model, not one per tensor."""
    named = [(name, parameter.detach()) for name, parameter in model.named_parameters() if parameter.numel()]
    if not named:
        return []
    device = named[0][1].device
    finite = torch.stack([parameter.isfinite().all().to(device) for _, parameter in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_model_card(directory: str | os.PathLike, metrics: dict[str, Any] | None = None) -> Path:
    """README.md for the hub from what the folder holds: data summary, config, eval and detection metrics."""
    directory = Path(directory)
    config = _read_json(directory / "config.json")
    data = _read_json(directory / DATA_SUMMARY_FILE)
    detection = _read_json(directory / "detection_metrics.json")
    training_config = {}
    if (directory / TRAINING_CONFIG_FILE).exists():
        training_config = yaml.safe_load((directory / TRAINING_CONFIG_FILE).read_text()) or {}
    metrics = {k: v for k, v in (metrics or _read_json(directory / "eval_results.json")).items()
               if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}

    def table(rows: dict[str, Any]) -> str:
        if not rows:
            return "_not recorded_\n"
        lines = ["| | |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
                  for key, value in rows.items()]
        return "\n".join(lines) + "\n"

    model_rows = {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "max_position_embeddings", "vocab_size",
                                              "tokenizer_vocab_size", "input_kind") if k in config}
    scoring_rows = {k: config.get(k) for k in ("anomaly_threshold", "num_candidates", "score_name",
                                                "threshold_target_fpr") if config.get(k) is not None}
    training_rows = training_config.get("training", {})
    card = f"""---
library_name: transformers
pipeline_tag: log-anomaly
tags:
- logbert
- log-anomaly-detection
- masked-language-modeling
---

# LogBERT log anomaly detector

A BERT masked-language model (LogBERT, Guo et al. 2021) trained self-supervised on sessions of normal log
events. A session whose events the model cannot predict is flagged as anomalous.

## Score sessions

```python
from transformers import pipeline

detector = pipeline("log-anomaly", model="PATH_OR_REPO", trust_remote_code=True)
detector(["22 5 5 5 11 9 11 9 11 9 26 26 26 23 23 23 21 21 21"])
# [{{'anomaly_score': ..., 'is_anomaly': False, 'threshold': ..., 'events': [...]}}]
```

With the `logbert` package installed, `pipeline("log-anomaly", model=PATH, pipeline_class=LogAnomalyPipeline)`
(`from logbert import LogAnomalyPipeline`) uses the package's code instead, and
`logbert-score --model PATH --input FILES --output scores.jsonl` scores files.

## Data

{table({k: v for k, v in data.items() if not isinstance(v, (list, dict))})}
## Model

{table(model_rows)}
## Training

{table({k: v for k, v in training_rows.items() if not isinstance(v, (list, dict))})}
## Evaluation (masked-event prediction on held-out sessions)

{table(metrics)}
## Anomaly detection

{table(scoring_rows)}
{table({k: v for k, v in detection.items() if isinstance(v, (int, float))}) if detection else ''}
"""
    path = directory / "README.md"
    path.write_text(card)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one, never a part of it.

    The temporary file is a sibling (same file system, so os.replace is atomic) created with mode 0666 less
    the umask, as `open(path, "w")` would, not the 0600 of `tempfile`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def is_complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last: a folder without a readable one was cut off mid-write."""
    state = path / "trainer_state.json"
    has_weights = any((path / name).exists() for name in CHECKPOINT_WEIGHTS)
    return has_weights and bool(_read_json(state))


def find_latest_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`; incomplete ones (a crash while saving) are skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = sorted(
        (int(match.group(1)), entry) for entry in output_dir.iterdir()
        if entry.is_dir() and (match := CHECKPOINT_PATTERN.match(entry.name))
    )
    for step, path in reversed(candidates):
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("Skipping %s: it was not completely written (no trainer_state.json or weights).", path)
    return None
