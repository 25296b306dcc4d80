"""Resuming a run: which checkpoint, whether it fits this run, and training on exactly the batches it would have.

Everything a resumed run needs lives here: finding the checkpoint (`--resume_from_checkpoint` with or without a
path), refusing one that is incomplete or built for another model, refusing an output folder that holds another
run, and the callback that makes batches, masks and end-slot cuts identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# One of these holds the weights of a checkpoint: single file or sharded (the index is written after the shards).
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")
# What a finished or interrupted run leaves in its output folder; any of these means "another run lives here".
RUN_MARKERS = ("config.json", "model.safetensors", "trainer_state.json", "training_config.yaml", "best_model",
               "known_count_vectors.npy")
# Removed by --overwrite_output_dir: what a new run would otherwise mix with its own (stale checkpoints that
# --resume_from_checkpoint would pick, fingerprints built with another vocabulary).
STALE_RUN_FILES = ("best_model", "known_count_vectors.npy", "eval_results.json", "detection_metrics.json",
                   "all_results.json", "train_results.json", "trainer_state.json")
# Model shape settings that a checkpoint's weights fix: resuming with other values cannot load them.
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings")


class ResumeError(ValueError):
    """A checkpoint or output folder that this run cannot use; the message says which and what to do."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_complete_checkpoint(path: str | Path) -> bool:
    """The Trainer writes trainer_state.json last: a folder without a readable one was cut off mid-write."""
    path = Path(path)
    has_weights = any((path / name).exists() for name in CHECKPOINT_WEIGHTS)
    return has_weights and bool(_read_json(path / "trainer_state.json"))


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), entry) for entry in output_dir.iterdir()
             if entry.is_dir() and (match := CHECKPOINT_PATTERN.match(entry.name))]
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`; incomplete ones (a crash while saving) are skipped."""
    for path in reversed(checkpoints_in(output_dir)):
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("Skipping %s: it was not completely written (no trainer_state.json or weights).", path)
    return None


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from, or None to start afresh.

    "latest" (the flag without a path) means the newest complete checkpoint in `output_dir`; a named folder must
    be a complete checkpoint, else ResumeError says what is missing.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint in ("latest", "true", "True"):
        checkpoint = find_latest_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning("--resume_from_checkpoint: no complete checkpoint in %s; starting from scratch.", output_dir)
        return checkpoint
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ResumeError(f"--resume_from_checkpoint {path}: no such folder")
    if not is_complete_checkpoint(path):
        raise ResumeError(f"--resume_from_checkpoint {path}: incomplete checkpoint (no weights or no readable "
                          "trainer_state.json; it was cut off while saving). Pick an earlier checkpoint, or pass "
                          "--resume_from_checkpoint without a path to take the newest complete one.")
    return str(path)


def check_checkpoint_fits(checkpoint: str, model_args) -> None:
    """Refuse a checkpoint whose weights have another shape than the model this run builds."""
    saved = _read_json(Path(checkpoint) / "config.json")
    if not saved:
        raise ResumeError(f"{checkpoint}: no readable config.json; it is not a checkpoint of this trainer")
    different = [f"{key} {saved[key]} (this run: {getattr(model_args, key)})" for key in SHAPE_KEYS
                 if key in saved and getattr(model_args, key, saved[key]) != saved[key]]
    if different:
        raise ResumeError(f"{checkpoint} was trained with {', '.join(different)}: resume with the checkpoint's "
                          "settings (its training_config.yaml in the output folder), or start a new run in another "
                          "--output_dir.")


def checkpoint_tokenizer_path(checkpoint: str | None) -> str | None:
    """The checkpoint's own vocabulary, which a resumed run must keep: its embedding rows are indexed by it."""
    if checkpoint and (Path(checkpoint) / "tokenizer.json").is_file():
        return checkpoint
    return None


def prepare_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> None:
    """Refuse an output folder that is a file or holds another run, unless the user resumes or overwrites it.

    Checked before any data is read, so a mistake costs seconds, not a parse of the whole corpus.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ResumeError(f"--output_dir {path} is a file, not a folder")
    if not path.is_dir() or resuming:
        return
    found = [name for name in RUN_MARKERS if (path / name).exists()] + [p.name for p in checkpoints_in(path)]
    if not found:
        return
    if not overwrite:
        raise ResumeError(f"--output_dir {path} holds another run ({', '.join(found[:4])}). Continue it with "
                          "--resume_from_checkpoint, replace it with --overwrite_output_dir, or pick another "
                          "--output_dir.")
    for checkpoint in checkpoints_in(path):
        shutil.rmtree(checkpoint)
    for name in STALE_RUN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    logger.warning("--overwrite_output_dir: removed the previous run's checkpoints and models from %s.", path)


class ReproducibleResumeCallback(TrainerCallback):
    """Make a run resumed from checkpoint-N train on the same batches, with the same masks, as an uninterrupted one.

    Two things in the stock Trainer break this, even on CPU with a fixed seed:
    - the length-grouped sampler shuffles with the global RNG when an epoch starts, a state no checkpoint holds,
      so a run resumed in epoch 2 or later sees another order;
    - the collator masks with the global RNG, and on resume the Trainer restores `rng_state.pth` only after it
      has fetched, and so masked, the first batch: that batch gets other masks, and every later draw (masks
      and dropout) is shifted by the collation the restore then undoes.
    So the sampler gets its own generator seeded with `seed + epoch` (what accelerate does for a plain random
    sampler), the end-slot sampler (`logbert.trainer.EndSlotSampler`) is told the epoch and draws from
    (seed, epoch) itself, and each training batch is collated under a forked global RNG seeded from
    (seed, epoch, the batch's input_ids). Masks then depend on what is masked and when, not on how many batches
    were drawn before, and the global RNG that dropout draws from no longer moves during collation: after the
    Trainer's restore it is exactly where the uninterrupted run had it. Workers collate with the same seeds, so
    this holds with `--dataloader_num_workers` > 0 too.

    The epoch is set here and only here. The Trainer's own `set_epoch` calls do not reach a sampler under
    accelerate's wrappers when a run resumes mid-epoch on several processes (SkipBatchSampler ->
    BatchSamplerShard -> BatchSampler -> sampler), so the trainer is asked for its end-slot sampler directly.
    """

    def __init__(self, trainer=None):
        self.trainer = trainer
        self.collate: SeededCollate | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if train_dataloader is None:
            return
        # accelerate's DataLoaderShard iterates its wrapped `base_dataloader`; skip_first_batches (resume) copies
        # the collate_fn from it, so wrapping it here, before the first epoch, covers both paths.
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)
        if isinstance(loader.collate_fn, SeededCollate):
            self.collate = loader.collate_fn
        else:
            self.collate = SeededCollate(loader.collate_fn, args.seed)
            loader.collate_fn = self.collate

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # state.epoch is the integer epoch at an epoch start, and epoch + fraction done when resuming mid-epoch.
        epoch = math.floor(state.epoch or 0)
        if self.collate is not None:
            self.collate.epoch = epoch
        sampler = length_grouped_sampler(train_dataloader)
        if sampler is not None:
            sampler.generator = torch.Generator().manual_seed(args.seed + epoch)
        end_slot_sampler = getattr(self.trainer, "end_slot_sampler", None)
        if end_slot_sampler is not None:
            end_slot_sampler.set_epoch(epoch)


class SeededCollate:
    """`collate_fn(examples)` run with the global torch RNG forked and seeded from (seed, epoch, the batch's tokens).

    A plain class, not a closure, so that dataloader workers can pickle it.
    """

    def __init__(self, collate_fn, seed: int, epoch: int = 0):
        self.collate_fn = collate_fn
        self.seed = seed
        self.epoch = epoch

    def batch_seed(self, examples) -> int:
        digest = hashlib.blake2b(f"{self.seed}/{self.epoch}".encode(), digest_size=8)
        for example in examples:
            ids = example["input_ids"] if isinstance(example, dict) and "input_ids" in example else example
            tokens = np.asarray(ids, dtype=np.int64)
            digest.update(len(tokens).to_bytes(8, "little"))  # so that [1 2][3] and [1][2 3] differ
            digest.update(tokens.tobytes())
        return int.from_bytes(digest.digest(), "little") & (2**63 - 1)

    def __call__(self, examples):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.batch_seed(examples))
            return self.collate_fn(examples)


def length_grouped_sampler(dataloader) -> LengthGroupedSampler | None:
    """The Trainer's LengthGroupedSampler inside an accelerate-prepared dataloader, under its batch-sampler wrappers."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    for _ in range(4):  # BatchSamplerShard -> BatchSampler -> sampler
        if batch_sampler is None:
            return None
        sampler = getattr(batch_sampler, "sampler", None)
        if isinstance(sampler, LengthGroupedSampler):
            return sampler
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    return None
