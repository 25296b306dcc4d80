"""MLM masking of log sessions with `DataCollatorForLanguageModeling` (15% of events, 80/10/10), plus the end slot."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling

from .tokenizer import never_masked_ids, vocabulary_fingerprint


@dataclass
class LogSessionCollator(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling` with two changes for log sessions.

    - The tokens never masked ([CLS], [SEP], [PAD]) are found with one tensor comparison instead of the
      tokenizer's per-session Python loop, which dominated collation time.
    - Columns that are not model inputs (`length`, read by the length-grouped sampler) are dropped.
    - The "random token" of the 10% random replacements is never [CLS], [SEP] or [PAD]: a frame token in the
      middle of a session is not a plausible event, and [PAD] there would contradict the attention mask.
    Everything else (the 80/10/10 split, dynamic padding to a multiple of 8, the seeded generator) is the
    Hugging Face collator's.
    """

    input_columns: tuple[str, ...] = ("input_ids",)
    _never_masked: torch.Tensor | None = field(default=None, init=False, repr=False)
    _replacement_ids: torch.Tensor | None = field(default=None, init=False, repr=False)

    def torch_call(self, examples):
        if "labels" in examples[0]:  # masked once, ahead of time (evaluation): pad only
            return self._pad_premasked(examples)
        examples = [{k: v for k, v in example.items() if k in self.input_columns} for example in examples]
        return super().torch_call(examples)

    def _pad_premasked(self, examples):
        batch = self.tokenizer.pad([{"input_ids": e["input_ids"]} for e in examples], return_tensors="pt",
                                   pad_to_multiple_of=self.pad_to_multiple_of)
        labels = torch.full_like(batch["input_ids"], -100)
        for row, example in enumerate(examples):
            labels[row, : len(example["labels"])] = torch.as_tensor(example["labels"])
        batch["labels"] = labels
        return batch

    def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
        if self._never_masked is None:
            self._never_masked = torch.tensor(never_masked_ids(self.tokenizer))
            everything = torch.arange(len(self.tokenizer))
            self._replacement_ids = everything[~torch.isin(everything, self._never_masked)]
        if special_tokens_mask is None:
            special_tokens_mask = torch.isin(inputs, self._never_masked)
        inputs, labels = super().torch_mask_tokens(inputs, special_tokens_mask, offset_mapping)
        # A masked position never held a frame token, so one there now is a random replacement that drew it:
        # draw again among the other ids (uniform over them, as if drawn there in the first place).
        redraw = (labels != -100) & torch.isin(inputs, self._never_masked)
        if redraw.any():
            picks = torch.randint(len(self._replacement_ids), (int(redraw.sum()),), generator=self.generator)
            inputs[redraw] = self._replacement_ids[picks].to(inputs.dtype)
        return inputs, labels


NO_END_SLOT = -1


def draw_end_slots(events: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Where each session's end slot goes: NO_END_SLOT, or k, the number of events kept before the slot.

    A share `probability` of the sessions with at least one event get a slot. Half of those keep every event
    (k = events: the slot predicts [SEP]); the others keep a uniform random prefix of 1..events-1 events (the
    slot predicts event k + 1). A one-event session has no proper prefix and always keeps its event.

    Args:
        events: events per session, [CLS] and [SEP] not counted. # (N,)
    Returns:
        # (N,) int64
    """
    events = np.asarray(events, dtype=np.int64)
    chosen = (rng.random(len(events)) < probability) & (events >= 1)
    whole = (rng.random(len(events)) < 0.5) | (events == 1)
    prefix = 1 + (rng.random(len(events)) * np.maximum(events - 1, 1)).astype(np.int64)
    return np.where(chosen, np.where(whole, events, prefix), NO_END_SLOT)


def draw_window_starts(events: np.ndarray, end_slots: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Where the events kept before an end slot start: 0 (the session's start), or, for half of the prefix cuts
    longer than `window`, `end_slot - window`: the slot then sees only the last `window` events, in place (their
    positions in the session), as "linear" scoring reads a left-to-right window. 0 everywhere when `window` is 0.

    Args:
        events: events per session, [CLS] and [SEP] not counted. # (N,)
        end_slots: `draw_end_slots`' cuts. # (N,)
    Returns:
        # (N,) int64
    """
    events, end_slots = np.asarray(events, dtype=np.int64), np.asarray(end_slots, dtype=np.int64)
    if window <= 0:
        return np.zeros(len(end_slots), dtype=np.int64)
    coin = rng.random(len(end_slots)) < 0.5
    windowed = coin & (end_slots != NO_END_SLOT) & (end_slots < events) & (end_slots > window)
    return np.where(windowed, end_slots - window, 0)


def end_slot_lengths(lengths: np.ndarray, end_slots: np.ndarray, window_starts: np.ndarray | None = None) -> np.ndarray:
    """Tokens per session once its end slot is in place: [CLS], the events kept, the slot."""
    kept = end_slots if window_starts is None else end_slots - window_starts
    return np.where(end_slots == NO_END_SLOT, lengths, kept + 2)


@dataclass
class EndOfSessionCollator:
    """Wraps the MLM collator: some sessions end in a masked "end slot" instead of [SEP].

    Per-event MLM cannot see that events are missing: a truncated HDFS session such as `22 5 5` is locally
    plausible everywhere. So, for a share `probability` of the sessions, the final [SEP] becomes [MASK] and the
    model must predict what is there: [SEP] for a complete session (half of them), the next event for a random
    prefix (the other half). At scoring time `-log P([SEP] | session, end slot)` then says how unlikely it is
    that the session ends where it ends.

    Where each slot goes comes with the example as `end_slot` (see `draw_end_slots`), drawn by the training
    sampler so that batches can be grouped by the length after the cut (`logbert.trainer`). Examples without
    it (a plain Trainer, or another sampling strategy) get slots drawn here, from the torch RNG.

    With `window` > 0, half of the prefix cuts keep only their last `window` events (`window_start`, see
    `draw_window_starts`), at the positions they have in the session: the batch then carries `position_ids`.
    """

    collator: object
    probability: float = 0.5
    window: int = 0

    def __call__(self, examples):
        if "labels" in examples[0]:  # evaluation sessions, masked ahead of time: plain MLM
            return self.collator(examples)
        tokenizer = self.collator.tokenizer
        mask = tokenizer.mask_token_id
        if "end_slot" in examples[0]:
            end_slots = [example["end_slot"] for example in examples]
            starts = [example.get("window_start", 0) for example in examples]
        else:
            rng = np.random.default_rng(int(torch.randint(2**62, (1,))))
            events = [len(example["input_ids"]) - 2 for example in examples]
            end_slots = draw_end_slots(events, self.probability, rng)
            starts = draw_window_starts(events, end_slots, self.window, rng).tolist()
            end_slots = end_slots.tolist()
        ends = []  # (row, position, label)
        reshaped = []
        for row, (example, kept, start) in enumerate(zip(examples, end_slots, starts)):
            ids = list(example["input_ids"])
            if kept != NO_END_SLOT:  # keep [CLS] and `kept` events (from `start` on); the slot holds what came next
                # The whole session: its end is [SEP], also for token-id data whose last token is something else.
                label = tokenizer.sep_token_id if kept == len(ids) - 2 else ids[kept + 1]
                ids = ids[:1] + ids[start + 1: kept + 1] + [mask]
                ends.append((row, kept - start + 1, label))
            reshaped.append({**example, "input_ids": ids})
        batch = self.collator(reshaped)
        for row, position, label in ends:
            batch["input_ids"][row, position] = mask
            batch["labels"][row, position] = label
        if any(starts):  # windows sit where their events sit in the session; [CLS] stays at 0
            position_ids = torch.arange(batch["input_ids"].shape[1]).repeat(len(examples), 1)
            for row, (start, example) in enumerate(zip(starts, reshaped)):
                # only the row's own tokens move: its padding keeps positions the model has, whatever the batch
                position_ids[row, 1: len(example["input_ids"])] += start
            batch["position_ids"] = position_ids
        return batch


def build_collator(tokenizer, data_args, seed: int | None = None) -> LogSessionCollator:
    return LogSessionCollator(
        tokenizer=tokenizer,
        mlm=True,
        mlm_probability=data_args.mlm_probability,
        mask_replace_prob=data_args.mask_replace_prob,
        random_replace_prob=data_args.random_replace_prob,
        pad_to_multiple_of=data_args.pad_to_multiple_of,
        seed=seed,
    )


def mask_for_evaluation(dataset, tokenizer, data_args, seed: int):
    """Mask the evaluation sessions once, with a fixed seed, so every evaluation scores the same positions.

    With fresh random masks per evaluation, eval loss moves with the masks as much as with the model, and
    the "best" model is partly chosen by chance. Returns a dataset with `input_ids` (masked), `labels`, `length`.
    """
    collator = build_collator(tokenizer, data_args, seed=seed)

    def mask(batch):
        masked_ids, labels = [], []
        for ids in batch["input_ids"]:
            inputs, targets = collator.torch_mask_tokens(torch.tensor([ids]))
            masked_ids.append(inputs[0].tolist())
            labels.append(targets[0].tolist())
        return {"input_ids": masked_ids, "labels": labels, "length": batch["length"]}

    collator.create_rng()
    return dataset.map(mask, batched=True, remove_columns=dataset.column_names, desc="Masking evaluation sessions",
                       new_fingerprint=_masking_fingerprint(dataset, tokenizer, data_args, seed))


def _masking_fingerprint(dataset, tokenizer, data_args, seed: int) -> str:
    # Every setting that changes the masks is in it, or a cached masking done with other settings is reused.
    settings = (dataset._fingerprint, seed, data_args.mlm_probability, data_args.mask_replace_prob,
                data_args.random_replace_prob, vocabulary_fingerprint(tokenizer))
    return "masked-" + hashlib.sha256(repr(settings).encode()).hexdigest()[:32]


def build_training_collator(tokenizer, data_args):
    """The training collator: MLM masking, and the end slot on `end_of_session_probability` of the sessions."""
    collator = build_collator(tokenizer, data_args)
    if data_args.end_of_session_probability > 0:
        return EndOfSessionCollator(collator, data_args.end_of_session_probability, data_args.end_slot_window)
    return collator
