"""Trainer callbacks: export the best model, stop on divergence, save and stop on SIGTERM, resume exactly."""

from __future__ import annotations

import hashlib
import logging
import math
import signal

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from .export import non_finite_parameters

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss stayed NaN or infinite."""


class BestModelExportCallback(TrainerCallback):
    """Write the model with the lowest eval loss so far to `OUTPUT_DIR/best_model/` (loadable with from_pretrained).

    Independent of checkpoint rotation, so `save_total_limit` never deletes the best model. A NaN eval loss is
    never "best".
    """

    def __init__(self, export):
        self.export = export  # export(model, directory_name, metrics)
        self.best_loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run carries its eval losses in trainer_state.json. `state.best_metric` is no substitute: the
        # Trainer keeps it only with --metric_for_best_model, and then for that metric, not necessarily the loss.
        losses = [entry["eval_loss"] for entry in state.log_history
                  if isinstance(entry.get("eval_loss"), (int, float)) and math.isfinite(entry["eval_loss"])]
        if losses and self.best_loss is None:
            self.best_loss = min(losses)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not math.isfinite(loss):
            return
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss = loss
            if state.is_world_process_zero:
                self.export(model, "best_model", {**metrics, "step": state.global_step})
                logger.info("New best eval loss %.4f at step %d: exported best_model/", loss, state.global_step)


class NonFiniteLossCallback(TrainerCallback):
    """Stop with NonFiniteLossError once training has diverged, before a NaN checkpoint or model is written.

    The weights are the reliable signal: the Trainer's `logging_nan_inf_filter` (on by default) keeps NaN step
    losses out of the logged loss (a logging window of only NaN steps logs 0.0), and once one NaN gradient
    reaches AdamW every weight it touches stays NaN. So on each step that logs, evaluates, saves or ends
    training the weights are checked, and non-finite ones stop training at once. A logged loss or gradient
    norm that is NaN/inf with finite weights (fp16 overflow steps, which the gradient scaler skips) stops it
    only when it lasts `patience` logs in a row.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.streak = 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # DefaultFlowCallback, which runs first, has set the flags for this step; checking only on those
        # steps costs one device sync per log/eval/save, not one per step.
        if model is None or not (control.should_log or control.should_evaluate or control.should_save
                                 or control.should_training_stop):
            return
        names = non_finite_parameters(model)
        if names:
            raise NonFiniteLossError(
                f"training diverged at step {state.global_step}: {len(names)} parameter tensors hold NaN/inf "
                f"(first: {names[0]}). Lower --learning_rate, use bf16 instead of fp16, or check the data; the "
                "checkpoints written before this step are kept and no NaN model is exported."
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        values = {key: logs[key] for key in ("loss", "grad_norm") if isinstance(logs.get(key), (int, float))}
        if "loss" not in values:  # evaluation and end-of-training logs
            return
        bad = {key: value for key, value in values.items() if not math.isfinite(value)}
        self.streak = self.streak + 1 if bad else 0
        if self.streak >= self.patience:
            what = ", ".join(f"{key} {value}" for key, value in bad.items())
            raise NonFiniteLossError(
                f"the training loss or gradient norm was NaN/inf {self.streak} logging steps in a row (step "
                f"{state.global_step}: {what}). Lower --learning_rate, use bf16 instead of fp16, or check the data; "
                "the last good checkpoint is kept and no NaN model is exported."
            )


class GracefulStopCallback(TrainerCallback):
    """On SIGTERM (what preemptible clusters send) save a checkpoint at the end of the current step and stop."""

    def __init__(self):
        self.received: int | None = None
        self._previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    def _handle(self, signum, frame):
        self.received = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            logger.warning("SIGTERM received: saving checkpoint-%d in %s and stopping. To continue, run the same "
                           "command with --resume_from_checkpoint.", state.global_step, args.output_dir)
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_signal_handler()

    def restore_signal_handler(self) -> None:
        """Give SIGTERM back to its previous handler; also for a train() that ended in an exception."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class ReproducibleResumeCallback(TrainerCallback):
    """Make a run resumed from checkpoint-N train on the same batches, with the same masks, as an uninterrupted one.

    Two things in the stock Trainer break this, even on CPU with a fixed seed:
    - the length-grouped sampler shuffles with the global RNG when an epoch starts, a state no checkpoint holds,
      so a run resumed in epoch 2 or later sees another order;
    - the collator masks with the global RNG, and on resume the Trainer restores `rng_state.pth` only after it
      has fetched, and so masked, the first batch: that batch gets other masks, and every later draw (masks
      and dropout) is shifted by the collation the restore then undoes.
    So the sampler gets its own generator seeded with `seed + epoch` (what accelerate does for a plain random
    sampler; `logbert.trainer.EndSlotSampler` draws from (seed, epoch) itself), and each training batch is
    collated under a forked global RNG seeded from (seed, epoch, the batch's input_ids). Masks then depend on
    what is masked and when, not on how many batches were drawn before, and the global RNG that dropout draws
    from no longer moves during collation: after the Trainer's restore it is exactly where the uninterrupted run
    had it. Workers collate with the same seeds, so this holds
    with `--dataloader_num_workers` > 0 too.
    """

    def __init__(self):
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
