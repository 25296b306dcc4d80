#!/usr/bin/env python
"""Event encoding side by side: Python dict look-ups against the fast tokenizer (`is_split_into_words=True`).

    PYTHONPATH=. python benchmarks/bench_encode.py --sessions 50000

Both encode the same event-ID sessions (HDFS-like: mean ~140 events, 500 distinct events) through the same
`Dataset.map` call as `logbert.data.tokenize_events`, alternately, and must give identical `input_ids`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import numpy as np
from datasets import Dataset

from logbert.tokenizer import build_event_tokenizer


def by_dict(tokenizer, max_seq_length: int):
    vocab = tokenizer.get_vocab()
    unk, cls, sep = tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    keep = max_seq_length - 2

    def encode(batch):
        input_ids = [[cls, *(vocab.get(event, unk) for event in events[:keep]), sep] for events in batch["event_ids"]]
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}
    return encode


def by_tokenizer(tokenizer, max_seq_length: int):
    def encode(batch):
        input_ids = tokenizer(batch["event_ids"], is_split_into_words=True, truncation=True,
                              max_length=max_seq_length, return_attention_mask=False)["input_ids"]
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids]}
    return encode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 140, size=args.sessions), 2000)
    events = [f"E{e}" for e in rng.zipf(1.3, size=int(lengths.sum())) % 600]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sessions = [events[offsets[i]:offsets[i + 1]] for i in range(args.sessions)]
    tokenizer = build_event_tokenizer(Counter(e for e in events[: len(events) // 2] if not e.endswith("7")))
    dataset = Dataset.from_dict({"event_ids": sessions})
    timings: dict[str, list[float]] = {"dict_lookups": [], "fast_tokenizer": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, make in (("dict_lookups", by_dict), ("fast_tokenizer", by_tokenizer)):
            before = os.times()
            encoded = dataset.map(make(tokenizer, args.max_seq_length), batched=True, batch_size=10_000,
                                  remove_columns=["event_ids"], load_from_cache_file=False, keep_in_memory=True)
            after = os.times()
            timings[name].append(round(after.user - before.user + after.system - before.system, 2))
            outputs[name] = encoded["input_ids"]
    assert outputs["dict_lookups"] == outputs["fast_tokenizer"], "the two encodings differ"
    print(json.dumps({"sessions": args.sessions, "events": len(events), "cpu_seconds": timings,
                      "load_average": round(os.getloadavg()[0], 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
