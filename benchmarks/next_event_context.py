#!/usr/bin/env python
"""Which left-to-right context do the HDFS anomalies that linear scoring misses need? The probe behind
configs/hdfs.yaml's 30-event window.

    PYTHONPATH=. python benchmarks/next_event_context.py --model outputs/hdfs-s42/best_model \
        --abnormal ../shared/data/hdfs_deeplog/hdfs_test_abnormal

Linear scoring predicts event i from at most `next_event_window` events before it; exhaustive scoring from its whole
prefix. At the model's calibrated threshold, the HDFS anomalous test sessions that exhaustive scoring flags and
linear scoring (at --window) does not are long ones (about 40 events). This script scores their left-to-right rows
again with other bounded contexts, each read at the positions its events have in the session:
- "last W": the W events before event i (linear mode's rows, for W = --window: a check that this script reproduces
  the pipeline, which flags none of them);
- "first A + last W": the session's first A events too, so that how the session began stays in view at a bounded
  cost of A + W + 2 tokens a row;
- "whole prefix": exhaustive mode's rows (a check: it must flag them all).
It prints how many of those sessions each context flags, and their mean score (`next_max_nll`: the worst
left-to-right surprise, the ending included; every HDFS anomaly has an event mix new to the known-normal gate, so the
gated score is the model's). Sessions must fit the model's positions (HDFS's longest has 284 events).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.hdfs_modes import read_sessions
from logbert.cli import load_detector
from logbert.scoring import DEFAULT_NEXT_EVENT_WINDOW, SCORE_CEILING

WHOLE_PREFIX = 10**9


def next_event_nll(detector, events: list[str], first: int, last: int) -> np.ndarray:
    """-log P(event i | its context) for each event i >= 1, as the pipeline's left-to-right rows compute it.

    Args:
        detector: a loaded `LogAnomalyPipeline` (its model, tokenizer and candidate rules are used).
        events: the session's event IDs, at most the model's positions minus [CLS] and the slot.
        first, last: the context of event i is events [0, first) and [i - last, i) of the session.
    Returns:
        (len(events) - 1,) negative log-likelihoods, capped at the score ceiling as the pipeline caps them.
    """
    tokenizer, model = detector.tokenizer, detector.model
    if len(events) > detector.max_events:
        raise SystemExit(f"a session of {len(events)} events is longer than the model's {detector.max_events}")
    ids = [detector.event_to_id.get(event, tokenizer.unk_token_id) for event in events]
    if len(ids) < 2:
        return np.zeros(0)  # no event has a context
    rows = []  # (tokens, position ids, the true event) per predicted event
    for target in range(1, len(ids)):
        recent = max(0, target - last)
        context = list(range(target)) if recent <= first else [*range(first), *range(recent, target)]
        rows.append(([tokenizer.cls_token_id, *(ids[j] for j in context), tokenizer.mask_token_id],
                     [0, *(j + 1 for j in context), target + 1], ids[target]))
    width = max(len(tokens) for tokens, _, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # (R, T)
    attention_mask, position_ids = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    for row, (tokens, positions, _) in enumerate(rows):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention_mask[row, : len(tokens)] = 1
        position_ids[row, : len(tokens)] = torch.tensor(positions)
    with torch.inference_mode():
        hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids).last_hidden_state  # (R, T, H)
        slots = hidden[torch.arange(len(rows)), attention_mask.sum(dim=1) - 1]  # (R, H): only the slot's
        logits = model.cls(slots)[:, : detector.real_vocab_size].float()  # (R, V)
        logits[:, detector.never_predicted_ids] = float("-inf")  # as the pipeline's left-to-right rows ([SEP] kept)
        targets = torch.tensor([target for _, _, target in rows])
        nll = -torch.log_softmax(logits, dim=-1)[torch.arange(len(rows)), targets]
    return nll.clamp(max=SCORE_CEILING).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--abnormal", required=True, help="Anomalous sessions, one line of event IDs each.")
    parser.add_argument("--window", type=int, default=DEFAULT_NEXT_EVENT_WINDOW,
                        help="Linear mode's window, whose misses are probed (default: the project default).")
    parser.add_argument("--contexts", nargs="+", default=["0+10", "0+20", "5+5", "10+10", "2+8", "10+20"],
                        metavar="FIRST+LAST", help="Contexts to try: the first FIRST events and the last LAST.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.set_verbosity_error()

    detector = load_detector(args.model, device="cpu")
    threshold = detector.model.config.anomaly_threshold
    sessions = list({tuple(events): events for events in read_sessions(Path(args.abnormal))}.values())  # distinct
    settings = {"return_events": False, "masked_scores": False, "threshold": threshold}
    linear = detector(sessions, scoring_mode="linear", next_event_window=args.window, **settings)
    exhaustive = detector(sessions, scoring_mode="exhaustive", **settings)
    missed = [(events, whole) for events, windowed, whole in zip(sessions, linear, exhaustive)
              if whole["is_anomaly"] and not windowed["is_anomaly"]]
    linear_only = sum(windowed["is_anomaly"] and not whole["is_anomaly"]
                      for windowed, whole in zip(linear, exhaustive))
    lengths = [len(events) for events, _ in missed] or [0]
    print(json.dumps({"model": args.model, "threshold": threshold, "window": args.window,
                      "distinct_anomalous_sessions": len(sessions), "flagged_exhaustive_only": len(missed),
                      "flagged_linear_only": linear_only, "lengths": [min(lengths), max(lengths)]}))
    contexts = [(0, args.window), *(tuple(int(part) for part in text.split("+")) for text in args.contexts),
                (0, WHOLE_PREFIX)]
    for first, last in dict.fromkeys(contexts):
        scores = np.array([max(float(np.max(next_event_nll(detector, events, first, last), initial=0.0)),
                               whole["end_nll"])
                           for events, whole in missed])
        name = "whole prefix" if last == WHOLE_PREFIX else f"first {first} + last {last}"
        print(json.dumps({"context": name, "flagged": int((scores > threshold).sum()), "of": len(missed),
                          "mean_score": round(float(scores.mean()), 3) if len(scores) else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
