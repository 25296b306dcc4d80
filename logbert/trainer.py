"""The Trainer's training order: length-grouped batches of sessions as they are after their end-slot cut."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from transformers import Trainer

from .collator import (
    NO_END_SLOT,
    EndOfSessionCollator,
    draw_end_slots,
    draw_window_starts,
    end_slot_lengths,
)
from .resume import ReproducibleResumeCallback

# The strategies whose order EndSlotSampler can draw; "batch_rebalance" yields whole batches per rank and is left to
# the Trainer (the collator then draws the end slots itself, after the batches are formed).
PLANNED_STRATEGIES = ("group_by_length", "random", "sequential")


class EndSlotSampler(torch.utils.data.Sampler):
    """Yields `(index, end_slot)` pairs: each epoch's end-slot cuts, and an order grouped by the length after them.

    The end slot cuts a share of the sessions to a random prefix. Drawn in the collator, after the sampler had
    grouped the sessions by their full length, the cuts left a quarter of the rows far shorter than their batch's
    longest (padding efficiency 85% instead of 95%). So the cuts are drawn here, for the whole epoch at once, from
    (seed, epoch) alone, and sessions are grouped by the length they will have. The same seed gives every
    process of a distributed run, and a resumed run, the same cuts and order; workers receive the cut with the index.

    Args:
        lengths: tokens per session, [CLS] and [SEP] included. # (N,)
        batch_size: sessions per optimizer step on one device (per-device batch x gradient accumulation).
        probability: share of sessions that get an end slot.
        seed: with the epoch, fixes the cuts and the order.
        strategy: "group_by_length" (megabatches of 50 batches sorted longest first, as transformers'
            LengthGroupedSampler does), "random" or "sequential".
        window: with > 0, half of the prefix cuts keep only their last `window` events (`draw_window_starts`);
            the sampler then yields `(index, end_slot, window_start)`.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, probability: float, seed: int,
                 strategy: str = "group_by_length", window: int = 0):
        if strategy not in PLANNED_STRATEGIES:
            raise ValueError(f"EndSlotSampler: strategy {strategy!r} is not one of {PLANNED_STRATEGIES}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.probability = probability
        self.seed = seed
        self.strategy = strategy
        self.window = window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, end_slots, window_starts) of this epoch: indices in training order, each session's end slot,
        and where the events it keeps start."""
        rng = np.random.default_rng([self.seed, self.epoch])
        end_slots = draw_end_slots(self.lengths - 2, self.probability, rng)
        # Without a window nothing is drawn: runs without one keep the cuts and order they always had.
        starts = draw_window_starts(self.lengths - 2, end_slots, self.window, rng)
        if self.strategy == "sequential":
            order = np.arange(len(self.lengths))
        elif self.strategy == "random":
            order = rng.permutation(len(self.lengths))
        else:
            order = length_grouped_order(end_slot_lengths(self.lengths, end_slots, starts), self.batch_size, rng)
        return order, end_slots, starts

    def __iter__(self):
        order, end_slots, starts = self.plan()
        if not self.window:
            return iter(zip(order.tolist(), end_slots[order].tolist()))
        return iter(zip(order.tolist(), end_slots[order].tolist(), starts[order].tolist()))


def length_grouped_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """transformers' `get_length_grouped_indices` in numpy: shuffle, cut into megabatches, sort each longest first.

    Vectorised because it runs every epoch over every session (2.46M at the reference scale).
    """
    count = len(lengths)
    megabatch_size = max(min(count // (batch_size * 4), 50), 1) * batch_size
    shuffled = rng.permutation(count)
    megabatch = np.arange(count) // megabatch_size
    order = shuffled[np.lexsort((-lengths[shuffled], megabatch))]
    # The longest session of all goes first, so that running out of memory happens at step 1, not hours in.
    starts = np.arange(0, count, megabatch_size)
    longest = starts[np.argmax(lengths[order[starts]])]
    order[[0, longest]] = order[[longest, 0]]
    return order


class EndSlotDataset(torch.utils.data.Dataset):
    """The training sessions, read by the sampler's `(index, end_slot)` pairs; a plain index means no end slot."""

    def __init__(self, sessions: datasets.Dataset):
        self.sessions = sessions.select_columns(["input_ids"])

    def __len__(self) -> int:
        return len(self.sessions)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[dict]:
        # One Arrow read per batch instead of one per session.
        keys = [tuple(key) if isinstance(key, (tuple, list)) else (key, NO_END_SLOT) for key in keys]
        rows = self.sessions[[int(key[0]) for key in keys]]["input_ids"]
        return [{"input_ids": ids, "end_slot": int(key[1]), **({"window_start": int(key[2])} if len(key) > 2 else {})}
                for ids, key in zip(rows, keys)]


class LogBertTrainer(Trainer):
    """The Hugging Face Trainer, with end-slot cuts drawn by the sampler (`EndSlotSampler`) instead of the collator.

    Only the training dataloader changes, through the Trainer's own hooks; loss, loop, evaluation and saving are
    the Trainer's. Without the end slot (or with a strategy the sampler does not draw) it is the plain Trainer.
    A subclass rather than a callback because the Trainer builds its sampler inside `get_train_dataloader`, and a
    DataLoader's sampler cannot be replaced once built.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.end_slot_sampler: EndSlotSampler | None = None
        # The one owner of epochs, batch order and masks across resumes (see logbert.resume).
        self.add_callback(ReproducibleResumeCallback(self))

    def _end_slot_probability(self) -> float:
        collator = self.data_collator
        if (isinstance(collator, EndOfSessionCollator) and isinstance(self.train_dataset, datasets.Dataset)
                and self.args.train_sampling_strategy in PLANNED_STRATEGIES):
            return collator.probability
        return 0.0

    def get_train_dataloader(self):
        if not self._end_slot_probability():
            return super().get_train_dataloader()
        return self._get_dataloader(dataset=EndSlotDataset(self.train_dataset), description="Training",
                                    batch_size=self._train_batch_size, sampler_fn=self._build_end_slot_sampler,
                                    is_training=True)

    def _build_end_slot_sampler(self, dataset: EndSlotDataset) -> EndSlotSampler:
        # Read through Arrow: a numpy-formatted column converts row by row (minutes at the reference scale).
        table = self.train_dataset.with_format("arrow")
        lengths = table[self.args.length_column_name].to_numpy() \
            if self.args.length_column_name in self.train_dataset.column_names \
            else pc.list_value_length(table["input_ids"]).to_numpy()
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.end_slot_sampler = EndSlotSampler(
            lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
            self._end_slot_probability(), seed, self.args.train_sampling_strategy, self.data_collator.window)
        return self.end_slot_sampler

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        # The planned training features are exactly what the collator reads (input_ids, end_slot): keep them all.
        if description == "Training" and self._end_slot_probability():
            return data_collator
        return super()._get_collator_with_removed_columns(data_collator, description)
