"""Trainer callbacks: export the best model, stop on divergence, save and stop on SIGTERM.

Resuming exactly is `logbert.resume`'s."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path

from transformers import TrainerCallback

from .export import make_files_readable, non_finite_parameters

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
    """On SIGTERM (what preemptible clusters send) save a checkpoint at the end of the current step and stop.

    The handler stays installed after training, through the final evaluation and export: the training script
    checks `received` between those stages and stops at the next consistent point, so a SIGTERM never kills an
    export half-way. The script calls `restore_signal_handler` when it is done.
    """

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

    def restore_signal_handler(self) -> None:
        """Give SIGTERM back to its previous handler; also for a train() that ended in an exception."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class ReadableCheckpointCallback(TrainerCallback):
    """Checkpoint files readable by the group and others (as the umask allows), like every other file we write.

    safetensors saves through a private temporary file that it renames, so `model.safetensors` would stay 0600.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                make_files_readable(checkpoint)
