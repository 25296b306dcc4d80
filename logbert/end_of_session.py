"""End-of-session prediction: a masked slot after the last event that the model must fill with [SEP] or the next event."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EndOfSessionCollator:
    """Wraps the MLM collator: some sessions end in a masked "end slot" instead of [SEP].

    Per-event MLM cannot see that events are missing: a truncated HDFS session such as `22 5 5` is locally
    plausible everywhere. So, for a share `probability` of the sessions, the final [SEP] becomes [MASK] and the
    model must predict what is there: [SEP] for a complete session (half of them), the next event for a random
    prefix (the other half). At scoring time `-log P([SEP] | session, end slot)` then says how unlikely it is
    that the session ends where it ends.
    """

    collator: object
    probability: float = 0.5

    def __call__(self, examples):
        if "labels" in examples[0]:  # evaluation sessions, masked ahead of time: plain MLM
            return self.collator(examples)
        tokenizer = self.collator.tokenizer
        sep, mask = tokenizer.sep_token_id, tokenizer.mask_token_id
        ends = []  # (row, position, label)
        reshaped = []
        draws = torch.rand(len(examples), 2)
        for row, example in enumerate(examples):
            ids = list(example["input_ids"])
            events = len(ids) - 2
            if events >= 1 and draws[row, 0] < self.probability:
                if events == 1 or draws[row, 1] < 0.5:
                    ids, label = ids[:-1] + [mask], sep
                else:
                    cut = int(torch.randint(1, events, (1,)))  # keep events 1..cut, predict event cut+1
                    ids, label = ids[: cut + 1] + [mask], ids[cut + 1]
                ends.append((row, len(ids) - 1, label))
            reshaped.append({**example, "input_ids": ids})
        batch = self.collator(reshaped)
        for row, position, label in ends:
            batch["input_ids"][row, position] = mask
            batch["labels"][row, position] = label
        return batch
