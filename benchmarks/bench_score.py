#!/usr/bin/env python
"""Scoring throughput of `LogAnomalyPipeline` (the `log-anomaly` task): linear against exhaustive scoring.

    PYTHONPATH=. python benchmarks/bench_score.py                       # HDFS and reference-like lengths, both modes
    PYTHONPATH=. python benchmarks/bench_score.py --model OUTPUT_DIR/best_model --data-dir /tmp/logbert-corpus

Exhaustive scoring masks every event of a session alone and predicts it from its whole prefix: a session of n
events costs 2n rows of up to n tokens, O(n^2). The default (linear) masks every k-th event in k replicas and
predicts each event from at most 10 before it: about k + n rows of bounded length, O(n). Both modes score the same
sessions with the same model in one run, alternating, the fastest of --repeats passes kept, so the ratios hold
under a varying machine load. Without --model, a freshly initialised model (the project's default size, or
--config's) is saved with its token-id tokenizer and loaded back through `pipeline(...)`: throughput does not
depend on the weights. The drawn profiles ("hdfs", "heavy") hold all-different sessions with random events, the
worst case for the bounded windows; "hdfs-real" is the HDFS DeepLog test files themselves (all 23,838 sessions,
identical ones scored once in both modes), where bounded contexts repeat across sessions.

    PYTHONPATH=. python benchmarks/bench_score.py --lengths hdfs-real --size 4x256 --modes linear   # LogBERT's size

`--modes linear logbert-original` times, beside ours, the scoring loop of the original LogBERT code
(HelenGuohx/logbert, bert_pytorch/predict_log.py, `Predictor.helper`) on the same model and sessions: sessions
sorted by length, 32 a batch padded to the longest, 65% of the events masked at random (its HDFS mask_ratio), the
full-vocabulary log-softmax at every position, then per session and masked event whether the true event is among
the top `num_candidates` of a full argsort. Every session is scored (no deduplication); its data loader is left
out, which favours it. With `--vocab-size 136` the untrained model has HDFS's handful of events as the original
does (the token-id convention puts event k at id 104 + k). A mode named `linear-verdict` (or `exhaustive-verdict`)
scores with `masked_scores=False`: the left-to-right rows and the end slot only, all the default score needs.

    PYTHONPATH=. python benchmarks/bench_score.py --lengths hdfs-real --size 4x256 --vocab-size 136 \
        --modes linear linear-verdict logbert-original --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import pipeline

from benchmarks.generate_corpus import CLS_ID, FIRST_EVENT_ID, HDFS_DIR, SEP_ID, SessionSampler, load_hdfs_sessions
from logbert.config import parse_args
from logbert.data import TOKEN_IDS_KIND
from logbert.export import save_model_folder
from logbert.model import build_model
from logbert.pipeline import LogAnomalyPipeline
from logbert.tokenizer import build_token_id_tokenizer


# The HDFS DeepLog test files, as a user scores them (labels do not matter for speed).
HDFS_TEST_FILES = ("derived_normal_sample_7000", "hdfs_test_abnormal")


def untrained_model_dir(config: str | None, size: str | None, directory: str, vocab_size: int | None = None) -> str:
    """A model folder as training writes it, with freshly initialised weights."""
    size_flags = []
    if size:
        layers, hidden = (int(part) for part in size.lower().split("x"))
        size_flags = ["--num_hidden_layers", str(layers), "--hidden_size", str(hidden),
                      "--num_attention_heads", "4"]
    if vocab_size:
        size_flags += ["--vocab_size", str(vocab_size)]
    model_args = parse_args([*(["--config", config] if config else []), *size_flags, "--output_dir", directory]).model
    tokenizer = build_token_id_tokenizer(model_args.vocab_size)
    torch.manual_seed(0)
    model = build_model(model_args, tokenizer, TOKEN_IDS_KIND)
    save_model_folder(model, tokenizer, directory)
    return directory


def session_objects(args: argparse.Namespace, lengths: str, count: int | None) -> list[dict]:
    """Sessions in the reference JSON format (`token_ids`, `attention_mask`, `event_sequence`, `session_id`)."""
    if args.data_dir:
        sessions = []
        for path in sorted(Path(args.data_dir).glob("*.json")):
            sessions.extend(json.loads(path.read_text()))
            if len(sessions) >= count:
                return sessions[:count]
        return sessions
    if lengths == "hdfs-real":
        return hdfs_test_sessions(count)
    hdfs, _ = load_hdfs_sessions()
    sampler = SessionSampler.fit(hdfs, lengths, services=32, vocab_size=10000, max_seq_length=512,
                                 seed=args.seed)
    tokens, offsets = sampler.sample_sessions(count, np.random.default_rng(args.seed))
    sessions = []
    for i in range(count):
        events = tokens[offsets[i]: offsets[i + 1]].tolist()
        ids = [CLS_ID, *events, SEP_ID]
        sessions.append({"token_ids": ids, "attention_mask": [1] * len(ids),
                         "event_sequence": [f"E{e}" for e in events], "session_id": f"bench-{i}"})
    return sessions


def hdfs_test_sessions(count: int | None) -> list[dict]:
    """The HDFS DeepLog test sessions in file order (duplicates kept: a user's input has them), as session objects
    that both a token-id model (event k -> token FIRST_EVENT_ID + k) and an event-ID model (the real IDs) read."""
    paths = [HDFS_DIR / name for name in HDFS_TEST_FILES]
    if not all(path.is_file() for path in paths):
        raise SystemExit(f"--lengths hdfs-real needs the HDFS DeepLog test files in {HDFS_DIR}")
    sessions = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                events = line.split()
                if events:
                    ids = [CLS_ID, *(FIRST_EVENT_ID + int(e) for e in events), SEP_ID]
                    sessions.append({"token_ids": ids, "attention_mask": [1] * len(ids), "event_sequence": events,
                                     "session_id": f"{path.name}-{len(sessions)}"})
    return sessions[:count] if count else sessions


def time_scoring(detector, sessions: list[dict], **kwargs) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    detector(sessions, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


ORIGINAL_MODE = "logbert-original"
VERDICT_SUFFIX = "-verdict"  # e.g. linear-verdict: the pipeline with masked_scores=False


def pipeline_settings(mode: str) -> dict:
    if mode.endswith(VERDICT_SUFFIX):
        return {"scoring_mode": mode[: -len(VERDICT_SUFFIX)], "masked_scores": False}
    return {"scoring_mode": mode}


def time_original_logbert(model, tokenizer, sessions: list[dict], num_candidates: int, batch_size: int = 32,
                          mask_ratio: float = 0.65, seed: int = 0) -> float:
    """Seconds for the original LogBERT's test loop on `sessions` (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    rows = sorted((s["token_ids"][: sum(s["attention_mask"])] for s in sessions), key=len, reverse=True)
    device = model.device
    started = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(rows), batch_size):
            batch = rows[begin: begin + batch_size]
            input_ids = torch.full((len(batch), len(batch[0])), tokenizer.pad_token_id, dtype=torch.long)
            for row, tokens in enumerate(batch):
                input_ids[row, : len(tokens)] = torch.tensor(tokens)
            events = (input_ids != tokenizer.pad_token_id) & (input_ids != tokenizer.cls_token_id) & (
                input_ids != tokenizer.sep_token_id)
            masked = events & (torch.rand(input_ids.shape, generator=generator) < mask_ratio)
            labels = torch.where(masked, input_ids, torch.zeros_like(input_ids))
            input_ids = input_ids.masked_fill(masked, tokenizer.mask_token_id).to(device)
            output = torch.log_softmax(model(input_ids=input_ids, attention_mask=(input_ids != 0).long()).logits, -1)
            labels = labels.to(device)
            for i in range(len(batch)):
                index = labels[i] > 0
                predicted, truth = output[i][index], labels[i][index]
                undetected = sum(int(token not in torch.argsort(-predicted[j])[:num_candidates])
                                 for j, token in enumerate(truth))
                del undetected  # the original compares it with the masked count; the time is what matters here
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="A trained LogBERT folder (default: an untrained one).")
    parser.add_argument("--config", default=None, help="Model size of the untrained model (a YAML config).")
    parser.add_argument("--size", default=None, metavar="LAYERSxHIDDEN",
                        help="Size of the untrained model, e.g. 4x256 (the original LogBERT's); overrides --config's.")
    parser.add_argument("--data-dir", default=None, help="Sessions from a generate_corpus.py corpus (else drawn).")
    parser.add_argument("--lengths", choices=["hdfs", "hdfs-real", "heavy"], nargs="+",
                        default=["hdfs", "hdfs-real", "heavy"],
                        help="Drawn session lengths: HDFS's (mean ~20 events) and reference-like (mean ~150, max 510), "
                             "or the HDFS DeepLog test files themselves (hdfs-real, from ../shared/data).")
    parser.add_argument("--modes", nargs="+", default=["linear", "exhaustive"],
                        help=f"Scoring modes compared; {ORIGINAL_MODE} is the original LogBERT's test loop.")
    parser.add_argument("--vocab-size", type=int, default=None, help="Vocabulary of the untrained model.")
    parser.add_argument("--num-sessions", type=int, default=None,
                        help="Sessions timed per length profile (default: 400 at HDFS lengths, 24 at heavy ones, all "
                             "23,838 for hdfs-real).")
    parser.add_argument("--warmup-sessions", type=int, default=4, help="Sessions scored first, untimed.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed passes per mode; the fastest is kept.")
    parser.add_argument("--return-events", action="store_true", help="Build the per-event output too.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch-tokens", type=int, default=65536, help="Tokens per forward pass.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    temporary = tempfile.TemporaryDirectory(prefix="logbert-bench-score-")
    model_dir = args.model or untrained_model_dir(args.config, args.size, temporary.name, args.vocab_size)
    detector = pipeline("log-anomaly", model=model_dir, pipeline_class=LogAnomalyPipeline, device=args.device,
                        dtype=getattr(torch, args.dtype))
    profiles = [args.data_dir] if args.data_dir else args.lengths
    results = {}
    for profile in profiles:
        count = args.num_sessions or {"hdfs": 400, "heavy": 24, "hdfs-real": None}.get(profile, 400)
        sessions = session_objects(args, profile, count and args.warmup_sessions + count)
        # The real files are timed whole; their first sessions warm up too.
        warmup = sessions[: args.warmup_sessions]
        timed = sessions if count is None else sessions[args.warmup_sessions:]
        events = sum(sum(s["attention_mask"]) - 2 for s in timed)
        seconds = dict.fromkeys(args.modes, float("inf"))
        num_candidates = getattr(detector.model.config, "num_candidates", None) or 5
        for mode in args.modes:
            if mode == ORIGINAL_MODE:
                time_original_logbert(detector.model, detector.tokenizer, warmup, num_candidates)
            else:
                detector(warmup, return_events=False, batch_tokens=args.batch_tokens, **pipeline_settings(mode))
        for _ in range(args.repeats):  # modes alternate, the best pass of each is kept: the load hits both alike
            for mode in args.modes:
                detector._cache.clear()  # every timed session is scored, none answered from the cache
                if mode == ORIGINAL_MODE:
                    elapsed = time_original_logbert(detector.model, detector.tokenizer, timed, num_candidates,
                                                    seed=args.seed)
                else:
                    elapsed = time_scoring(detector, timed, return_events=args.return_events,
                                           batch_tokens=args.batch_tokens, **pipeline_settings(mode))
                seconds[mode] = min(seconds[mode], elapsed)
        results[profile] = {
            "sessions": len(timed),
            "distinct_sessions": len({tuple(s["token_ids"]) for s in timed}),
            "mean_events_per_session": events / len(timed),
            "max_events_per_session": max(sum(s["attention_mask"]) - 2 for s in timed),
            **{mode: {"seconds": seconds[mode], "sessions_per_second": len(timed) / seconds[mode],
                      "events_per_second": events / seconds[mode]} for mode in args.modes},
        }
    summary = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "model": args.model or f"untrained ({args.size or args.config or 'project default size'})",
        "parameters_millions": sum(p.numel() for p in detector.model.parameters()) / 1e6,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "return_events": args.return_events,
        "load_average": os.getloadavg()[0],
        "results": results,
    }
    print(json.dumps(summary, indent=2))
    baseline = args.modes[-1]
    rows = [f"{'lengths':10s} {'mode':11s} {'sessions/s':>11} {'events/s':>10} {'vs ' + baseline:>14}"]
    for profile, result in results.items():
        for mode in args.modes:
            r = result[mode]
            ratio = r["sessions_per_second"] / result[baseline]["sessions_per_second"]
            rows.append(f"{profile:10s} {mode:11s} {r['sessions_per_second']:11.2f} {r['events_per_second']:10.0f} "
                        f"{ratio:13.2f}x")
    print("\n" + "\n".join(rows), file=sys.stderr)
    temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
