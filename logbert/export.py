"""Model folders: model + tokenizer + resolved config + model card, identical on disk and on the hub."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

TRAINING_CONFIG_FILE = "training_config.yaml"
DATA_SUMMARY_FILE = "data_summary.json"

# What an export (and, later, calibration and evaluation) writes in a model folder: a folder holding only these is
# an earlier export, which a new one replaces whole.
MODEL_FOLDER_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "pipeline.py",
                      "scoring.py", "session.py", "model_files.py", "parser_state.json",
                      TRAINING_CONFIG_FILE, DATA_SUMMARY_FILE, "eval_results.json", "README.md",
                      "known_count_vectors.npy", "detection_metrics.json"}
MODEL_SHARD_PATTERN = re.compile(r"^model-\d+-of-\d+\.safetensors$")


def save_model_folder(model, tokenizer, directory: str | os.PathLike, training_config: dict[str, Any] | None = None,
                      metrics: dict[str, Any] | None = None, data_summary: dict[str, Any] | None = None) -> Path:
    """Write everything `from_pretrained(directory)` and the scoring pipeline need, plus a model card.

    All of it is written to a temporary folder first and then moved into place (`publish_folder`), so a process
    killed while exporting never leaves a folder with config.json and pipeline.py but no weights. Files get the
    mode `open()` would give (0666 less the umask). Refuses to write a model whose weights are not finite: a NaN
    model must never become `best_model`.
    """
    directory = Path(directory)
    names = non_finite_parameters(model)
    if names:
        raise ValueError(f"refusing to export {directory}: parameter {names[0]} holds NaN/inf "
                         f"({len(names)} tensors in all)")
    staging = _staging_folder(directory)
    try:
        # Saving through the pipeline also writes its code (pipeline.py, scoring.py) and registers the
        # `log-anomaly` task in config.json, so `pipeline(model=directory, trust_remote_code=True)` works anywhere.
        from .pipeline import LogAnomalyPipeline

        LogAnomalyPipeline(model=model, tokenizer=tokenizer, device=model.device).save_pretrained(
            staging, safe_serialization=True)
        if training_config is not None:
            (staging / TRAINING_CONFIG_FILE).write_text(yaml.safe_dump(training_config, sort_keys=False))
        if data_summary is not None:
            (staging / DATA_SUMMARY_FILE).write_text(json.dumps(data_summary, indent=2))
        if metrics:  # the card is regenerated later (threshold calibration) from what the folder holds
            (staging / "eval_results.json").write_text(json.dumps(metrics, indent=2, default=str))
        write_model_card(staging, metrics=metrics)
        make_files_readable(staging)
        publish_folder(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _staging_folder(directory: Path) -> Path:
    """An empty temporary folder on the same file system as `directory`, named so that it is never pushed.

    A sibling when the whole folder can be swapped, inside it when it is the training output folder (its
    checkpoints stay where they are, and its parent may not be ours to write in).
    """
    parent = directory if _holds_more_than_a_model(directory) else directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in parent.glob(f".{directory.name}.*.tmp"):  # from an export that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = parent / f".{directory.name}.{os.getpid()}.tmp"
    staging.mkdir()
    return staging


def _holds_more_than_a_model(directory: Path) -> bool:
    """True for a folder with anything an export does not write: a subfolder (checkpoint-N, runs, best_model) or
    a file of the run (trainer_state.json, train_results.json ...). Such a folder is never replaced whole."""
    if not directory.is_dir():
        return False
    return any(entry.is_dir() or not (entry.name in MODEL_FOLDER_FILES or MODEL_SHARD_PATTERN.match(entry.name))
               for entry in directory.iterdir())


def publish_folder(staging: Path, directory: Path) -> None:
    """Move a fully written model folder into place.

    A folder that holds only a model is swapped whole: the old one renamed aside, the new one renamed in, the old
    one removed. Into a folder that holds more (OUTPUT_DIR, with its checkpoints) the files move one by one,
    config.json last and the old config.json removed first: until the end the folder is not a loadable model,
    never a mix that looks complete. What an earlier model left that belongs to its weights and vocabulary (the
    known-normal fingerprints, its test metrics) goes with it.
    """
    from .pipeline import KNOWN_COUNT_VECTORS_FILE

    if not _holds_more_than_a_model(directory):
        old = directory.parent / f".{directory.name}.{os.getpid()}.old.tmp"
        if directory.exists():
            os.rename(directory, old)
        os.rename(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
        return
    for name in ("config.json", KNOWN_COUNT_VECTORS_FILE, "detection_metrics.json"):
        (directory / name).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda entry: entry.name == "config.json"):
        os.replace(entry, directory / entry.name)


def make_files_readable(directory: Path) -> None:
    """Give every file the mode `open()` gives (0666 less the umask).

    safetensors writes model.safetensors through a temporary file (Rust's tempfile crate) that it renames into
    place, so the weights would be 0600, unreadable to the group that shares the model, while config.json is 0644.
    """
    probe = directory / ".mode-probe"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o666))  # the kernel applies the umask, without a race
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in directory.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


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


# Hub metadata. `pipeline_tag` must be a task the hub knows: the model is a masked-language model (fill-mask);
# the task it serves, `log-anomaly` (the custom pipeline), is named in the tags.
CARD_TAGS = ["logbert", "log-anomaly-detection", "log-anomaly", "masked-language-modeling", "anomaly-detection"]
# Detection metrics reported in the model-index, with the hub's metric ids.
CARD_METRICS = {"f1": "f1", "precision": "precision", "recall": "recall", "auroc": "roc_auc",
                "auprc": "average_precision", "fpr": "false_positive_rate", "projected_f1": "f1"}


def build_model_card(directory: str | os.PathLike, metrics: dict[str, Any] | None = None,
                     datasets: list[str] | None = None):
    """A `huggingface_hub.ModelCard` from what the folder holds: data summary, config, eval and detection metrics.

    Args:
        directory: an exported model folder.
        metrics: masked-event evaluation metrics; default: the folder's eval_results.json.
        datasets: hub dataset ids the model was trained on; default: `datasets` in data_summary.json, if any.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    directory = Path(directory)
    config = _read_json(directory / "config.json")
    data = _read_json(directory / DATA_SUMMARY_FILE)
    detection = _read_json(directory / "detection_metrics.json")
    training_config = {}
    if (directory / TRAINING_CONFIG_FILE).exists():
        training_config = yaml.safe_load((directory / TRAINING_CONFIG_FILE).read_text()) or {}
    metrics = {k: v for k, v in (metrics or _read_json(directory / "eval_results.json")).items()
               if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}
    training_rows = training_config.get("training", {})
    datasets = datasets or data.get("datasets") or None
    model_name = training_rows.get("hub_model_id") or directory.resolve().name

    eval_results = None
    reported = {key: value for key, value in detection.items()
                if key in CARD_METRICS and isinstance(value, (int, float)) and math.isfinite(value)}
    if reported:
        counts = f"{detection.get('test_normal', '?')} normal + {detection.get('test_anomalous', '?')} anomalous"
        eval_results = [EvalResult(task_type="log-anomaly-detection", task_name="Log anomaly detection",
                                   dataset_type=datasets[0] if datasets else "log-sessions",
                                   dataset_name=f"test sessions ({counts} sessions)", dataset_split="test",
                                   metric_type=CARD_METRICS[key], metric_name=key, metric_value=round(float(value), 6),
                                   metric_config=detection.get("score_name"))
                        for key, value in reported.items()]
    card_data = ModelCardData(library_name="transformers", pipeline_tag="fill-mask", tags=CARD_TAGS,
                              datasets=datasets, model_name=model_name if eval_results else None,
                              eval_results=eval_results,
                              metrics=sorted({CARD_METRICS[key] for key in reported}) or None)

    model_rows = {k: config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "max_position_embeddings", "vocab_size",
                                              "tokenizer_vocab_size", "input_kind") if k in config}
    # The scoring mode and window belong beside the thresholds: a threshold holds for the scores it was set on.
    scoring_rows = {k: config.get(k) for k in ("anomaly_threshold", "model_only_threshold", "threshold_method",
                                                "num_candidates", "score_name", "scoring_mode", "next_event_window",
                                                "threshold_target_fpr", "calibration_sessions")
                    if config.get(k) is not None}
    from .pipeline import KNOWN_COUNT_VECTORS_FILE

    known_normal_gate = (directory / KNOWN_COUNT_VECTORS_FILE).exists()
    body = f"""
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

The hub lists the model under `fill-mask` (what it is); `log-anomaly` is the pipeline it ships in its own code
(`pipeline.py`, `scoring.py`), hence `trust_remote_code=True`. With the `logbert` package installed,
`pipeline("log-anomaly", model=PATH, pipeline_class=LogAnomalyPipeline)` (`from logbert import LogAnomalyPipeline`)
uses the package's code instead, and `logbert-score --model PATH --input FILES --output scores.jsonl` scores files.

## Data

{_table({k: v for k, v in data.items() if not isinstance(v, (list, dict))})}
## Model

{_table(model_rows)}
## Training

{_table({k: v for k, v in training_rows.items() if not isinstance(v, (list, dict))})}
## Evaluation (masked-event prediction on held-out sessions)

{_table(metrics)}
## Anomaly detection

{_explain_threshold(config, known_normal_gate)}

{_table(scoring_rows)}
{_table({k: v for k, v in detection.items() if isinstance(v, (int, float))}) if detection else ''}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def write_model_card(directory: str | os.PathLike, metrics: dict[str, Any] | None = None,
                     datasets: list[str] | None = None) -> Path:
    """README.md for the hub (see `build_model_card`), replaced atomically."""
    path = Path(directory) / "README.md"
    write_text_atomically(path, str(build_model_card(directory, metrics, datasets)))
    return path


def _table(rows: dict[str, Any]) -> str:
    if not rows:
        return "_not recorded_\n"
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
              for key, value in rows.items()]
    return "\n".join(lines) + "\n"


def _explain_threshold(config: dict[str, Any], known_normal_gate: bool) -> str:
    """What `anomaly_threshold` means for this model, in words: a bare number (above all a 0) says nothing."""
    threshold = config.get("anomaly_threshold")
    score = f"`anomaly_score` (`{config.get('score_name') or 'the session score'}`)"
    if threshold is None:
        return ("No threshold is calibrated: the pipeline returns scores but `is_anomaly` is null. Set one with "
                "`logbert-calibrate --model PATH --normal FILES`, or pass `threshold=` when scoring.")
    gate = (" The known-normal gate is on: a session whose multiset of events occurs in training scores 0 whatever "
            "the model says; the others get the model's score." if known_normal_gate else "")
    fpr, sessions = config.get("threshold_target_fpr"), config.get("calibration_sessions")
    if fpr is not None:
        origin = (f"It was set without labels on {sessions} held-out normal sessions, so that at most a share "
                  f"{fpr:g} of them is above it (the target false-positive rate).")
    else:
        origin = f"It maximises F1 on a labelled development set of {sessions} sessions."
    text = f"A session is flagged when its {score} is strictly above `anomaly_threshold` = {threshold:.6g}. "
    text += origin + gate
    if known_normal_gate and threshold == 0:
        model_only = config.get("model_only_threshold")
        text += (" **A threshold of 0 means** that every calibration session had an event multiset already seen in "
                 "training, so the gate scored them all 0: any session with a new multiset of events is flagged "
                 "(the detector then acts as the count-vector baseline, and the model only adds its scores for "
                 "ranking)." + (f" The model's own threshold, for `model_score` without the gate, is "
                                f"`model_only_threshold` = {model_only:.6g}." if model_only is not None else ""))
    return text


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
