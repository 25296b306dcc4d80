"""Trainer callbacks: export the best model, stop on a loss that stays NaN, save and stop on SIGTERM."""

from __future__ import annotations

import logging
import math
import signal

from transformers import TrainerCallback

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
        # Resumed runs carry the best loss in trainer_state.json.
        if state.best_metric is not None and self.best_loss is None:
            self.best_loss = state.best_metric

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
    """Stop with a clear error when the logged training loss is NaN/inf `patience` logs in a row.

    fp16 overflow steps are skipped by the gradient scaler and do not show up here; a loss that stays
    non-finite means the weights themselves diverged, and continuing would only write NaN checkpoints.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.streak = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        self.streak = 0 if math.isfinite(loss) else self.streak + 1
        if self.streak >= self.patience:
            raise NonFiniteLossError(
                f"the training loss was {loss} for {self.streak} logging steps in a row (step {state.global_step}). "
                "Lower --learning_rate, use bf16 instead of fp16, or check the data; the last good checkpoint "
                "is kept and no NaN model is exported."
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
            logger.warning("SIGTERM received: saving checkpoint-%d and stopping.", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
