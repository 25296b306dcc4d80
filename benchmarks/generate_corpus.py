#!/usr/bin/env python
"""Synthetic log sessions at the reference scale, in the reference JSON format: the input of the benchmarks.

    PYTHONPATH=. python benchmarks/generate_corpus.py --output-dir /tmp/logbert-corpus --lengths heavy
    PYTHONPATH=. python benchmarks/generate_corpus.py --output-dir /tmp/logbert-small --scale 0.01

The reference deployment trains on 286 daily files (preprocessed_logs_2025-02-24.json, ... one per day) holding
2,464,256 sessions, each a JSON object with `token_ids` ([CLS]=101 events [SEP]=102, padded with 0 to 512),
`attention_mask`, `event_sequence` and `session_id`. Its data is private, so this writes a stand-in:

- Session lengths are resampled from real HDFS sessions (`--lengths hdfs`, about 18 events), or from the same
  distribution stretched to a mean of about 150 tokens (`--lengths heavy`, what the reference assumes), with
  a log-normal jitter so that lengths are not all multiples of the stretch factor.
- Events follow a first-order Markov chain fitted on the HDFS sessions (a session that reaches an HDFS end
  event carries on with a new HDFS start event, as logs of several blocks interleave), and each of
  `--services` services maps the HDFS events to its own token ids, so the id space holds a few hundred events.
Everything is drawn from numpy generators seeded by (--seed, file index): the output is byte-identical for a
seed, whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REFERENCE_SESSIONS = 2_464_256  # 19,252 steps x 128 sessions, one epoch of the reference run
REFERENCE_FILES = 286
FIRST_DAY = date(2025, 2, 24)
FILE_NAME = "preprocessed_logs_{day}.json"
# The seed's token-id convention (BERT uncased): ids below 104 are special or unused.
PAD_ID, CLS_ID, SEP_ID, FIRST_EVENT_ID = 0, 101, 102, 104
HDFS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hdfs_deeplog"
HDFS_FILES = ("hdfs_train", "hdfs_test_abnormal", "derived_normal_sample_7000")
BUNDLED_HDFS_FILE = Path(__file__).resolve().parents[1] / "logbert" / "sample_data" / "hdfs_train.txt"
HEAVY_MEAN_TOKENS = 150
HEAVY_JITTER = 0.25  # sigma of the log-normal factor on each stretched length


def load_hdfs_sessions(hdfs_dir: Path = HDFS_DIR) -> tuple[list[list[str]], list[str]]:
    """HDFS sessions (lists of event IDs) from the shared data, or the bundled sample when it is absent."""
    files = [hdfs_dir / name for name in HDFS_FILES if (hdfs_dir / name).is_file()]
    if not files:
        files = [BUNDLED_HDFS_FILE]
    sessions = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            sessions.extend(line.split() for line in handle if line.strip())
    return sessions, [str(path) for path in files]


@dataclass
class SessionSampler:
    """Draws session lengths and event sequences; see the module docstring for the model."""

    event_counts: np.ndarray  # (S,) events per session of the HDFS pool, resampled for lengths
    start_probability: np.ndarray  # (K,)
    cumulative_transitions: np.ndarray  # (K * K,) row k holds k + cumsum(P(next | k)), for one searchsorted
    token_ids: np.ndarray  # (services, K) token id of event k in service s
    stretch: float  # 1 for --lengths hdfs
    max_seq_length: int

    @classmethod
    def fit(cls, sessions: list[list[str]], lengths: str, services: int, vocab_size: int, max_seq_length: int,
            seed: int) -> SessionSampler:
        events = sorted({e for s in sessions for e in s}, key=lambda e: (len(e), e))
        index = {e: i for i, e in enumerate(events)}
        k = len(events)
        transitions = np.zeros((k, k))
        starts = np.zeros(k)
        ends = np.zeros(k)
        for session in sessions:
            ids = [index[e] for e in session]
            starts[ids[0]] += 1
            ends[ids[-1]] += 1
            np.add.at(transitions, (ids[:-1], ids[1:]), 1)
        start_probability = starts / starts.sum()
        # Where an HDFS session ends, the stream goes on with a new session's first event.
        transitions += ends[:, None] * start_probability[None, :]
        transitions /= transitions.sum(axis=1, keepdims=True)
        cumulative = np.cumsum(transitions, axis=1)
        cumulative[:, -1] = 1.0
        cumulative += np.arange(k)[:, None]
        if services * k > vocab_size - FIRST_EVENT_ID:
            raise ValueError(f"--services {services} x {k} events do not fit in vocab_size {vocab_size}")
        id_space = np.random.default_rng([seed, 2**31]).permutation(np.arange(FIRST_EVENT_ID, vocab_size))
        event_counts = np.array([len(s) for s in sessions])
        stretch = 1.0
        if lengths == "heavy":
            stretch = (HEAVY_MEAN_TOKENS - 2) / event_counts.mean()
        return cls(event_counts, start_probability, cumulative.ravel(), id_space[: services * k].reshape(services, k),
                   stretch, max_seq_length)

    def sample_lengths(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Events per session (without [CLS]/[SEP]), at most max_seq_length - 2."""
        events = self.event_counts[rng.integers(len(self.event_counts), size=count)].astype(float)
        if self.stretch != 1.0:
            jitter = np.exp(rng.normal(-HEAVY_JITTER**2 / 2, HEAVY_JITTER, size=count))
            events = np.rint(events * self.stretch * jitter)
        return np.clip(events, 1, self.max_seq_length - 2).astype(np.int64)

    def sample_sessions(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` sessions as (flat token ids of their events, (count + 1,) offsets); no [CLS]/[SEP]."""
        lengths = self.sample_lengths(count, rng)
        k = len(self.start_probability)
        walk = np.empty((count, int(lengths.max())), dtype=np.int64)
        walk[:, 0] = np.searchsorted(np.cumsum(self.start_probability), rng.random(count), side="right")
        np.minimum(walk[:, 0], k - 1, out=walk[:, 0])
        for step in range(1, walk.shape[1]):
            state = walk[:, step - 1]
            walk[:, step] = np.searchsorted(self.cumulative_transitions, state + rng.random(count), side="right") \
                - state * k
        np.clip(walk, 0, k - 1, out=walk)
        service = rng.integers(len(self.token_ids), size=count)
        tokens = self.token_ids[service[:, None], walk]
        keep = np.arange(walk.shape[1])[None, :] < lengths[:, None]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return tokens[keep], offsets


def sessions_per_file(total: int, files: int) -> list[int]:
    base, extra = divmod(total, files)
    return [base + (i < extra) for i in range(files)]


def write_session_file(path: Path, day: str, tokens: np.ndarray, offsets: np.ndarray, padding: str,
                       max_seq_length: int, id_text: list[str], event_text: list[str]) -> int:
    """Write one day's sessions exactly as `json.dump(sessions, handle)` would. Returns the bytes written."""
    parts = []
    for i in range(len(offsets) - 1):
        events = tokens[offsets[i]: offsets[i + 1]].tolist()
        real = len(events) + 2
        pad = max_seq_length - real if padding == "max_length" else 0
        ids = f"{CLS_ID}, " + ", ".join([id_text[t] for t in events]) + f", {SEP_ID}" + f", {PAD_ID}" * pad
        mask = "1, " * (real - 1) + "1" + ", 0" * pad
        names = ", ".join([event_text[t] for t in events])
        parts.append(f'{{"token_ids": [{ids}], "attention_mask": [{mask}], "event_sequence": [{names}], '
                     f'"session_id": "{day}-{i:06d}"}}')
    text = "[" + ", ".join(parts) + "]"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, path)
    return len(text)


def _generate_file(job: tuple) -> dict:
    sampler, index, count, output_dir, padding, seed, vocab_size = job
    day = (FIRST_DAY + timedelta(days=index)).isoformat()
    rng = np.random.default_rng([seed, index])
    tokens, offsets = sampler.sample_sessions(count, rng)
    id_text = [str(i) for i in range(vocab_size)]
    event_text = [f'"E{i}"' for i in range(vocab_size)]
    path = Path(output_dir) / FILE_NAME.format(day=day)
    size = write_session_file(path, day, tokens, offsets, padding, sampler.max_seq_length, id_text, event_text)
    return {"file": str(path), "sessions": count, "bytes": size, "events": int(offsets[-1])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="Where the daily JSON files go (created).")
    parser.add_argument("--lengths", choices=["heavy", "hdfs"], default="heavy",
                        help="Session lengths: HDFS stretched to a mean of ~150 tokens (the reference's), or HDFS's.")
    parser.add_argument("--scale", type=float, default=1.0, help="Fraction of the 2,464,256 reference sessions.")
    parser.add_argument("--num-files", type=int, default=REFERENCE_FILES, help="Daily files (consecutive days).")
    parser.add_argument("--padding", choices=["max_length", "none"], default="max_length",
                        help="Pad token_ids/attention_mask to --max-seq-length as the reference files do, or not.")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--services", type=int, default=32, help="Services, each with its own ids for the events.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Processes writing files.")
    parser.add_argument("--hdfs-dir", default=str(HDFS_DIR), help="HDFS session files to fit lengths and events on.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    sessions, sources = load_hdfs_sessions(Path(args.hdfs_dir))
    sampler = SessionSampler.fit(sessions, args.lengths, args.services, args.vocab_size, args.max_seq_length,
                                 args.seed)
    total = max(args.num_files, round(REFERENCE_SESSIONS * args.scale))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sampler, i, count, str(output_dir), args.padding, args.seed, args.vocab_size)
            for i, count in enumerate(sessions_per_file(total, args.num_files))]
    if args.workers > 1:
        with get_context("spawn").Pool(args.workers) as pool:
            files = pool.map(_generate_file, jobs, chunksize=1)
    else:
        files = [_generate_file(job) for job in jobs]

    sessions_written = sum(f["sessions"] for f in files)
    events = sum(f["events"] for f in files)
    size = sum(f["bytes"] for f in files)
    result = {
        "output_dir": str(output_dir),
        "files": len(files),
        "first_file": Path(files[0]["file"]).name,
        "last_file": Path(files[-1]["file"]).name,
        "sessions": sessions_written,
        "lengths": args.lengths,
        "padding": args.padding,
        "mean_tokens": round(events / sessions_written + 2, 1),
        "bytes": size,
        "gigabytes": round(size / 1e9, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "hdfs_sources": sources,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'files':>8} {'sessions':>10} {'mean tokens':>12} {'GB':>7} {'seconds':>8}\n"
          f"{result['files']:>8} {sessions_written:>10} {result['mean_tokens']:>12} {result['gigabytes']:>7} "
          f"{result['seconds']:>8}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
