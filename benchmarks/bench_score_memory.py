"""Peak resident memory of `logbert score` for 1k and 20k sessions and for one 100,000-event session.

    python benchmarks/bench_score_memory.py [--work-dir /tmp/logbert-memory]

Each case runs `logbert score` in its own process under GNU time (`/usr/bin/time -f %M`), with an untrained
default-size model (2 x 128, token ids, vocabulary 10,000), and prints one JSON line: sessions, events, peak RSS
(MB) and wall seconds. Memory must not grow with the number of sessions (they are read and scored a chunk at a
time) nor with one session's length beyond the token budget (rows are built per window and batched under
`batch_tokens`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_score import untrained_model_dir

CLS_ID, SEP_ID = 101, 102


def write_sessions(path: Path, count: int, length: int | None, rng: np.random.Generator) -> int:
    """`count` token-id sessions of HDFS-like lengths (or all of `length` events); returns the events written."""
    events = 0
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            size = length or int(rng.integers(13, 40))
            ids = rng.integers(1000, 1040, size=size).tolist()  # 40 event types, as a small system has
            handle.write(json.dumps({"session_id": f"s{index}", "token_ids": [CLS_ID, *ids, SEP_ID]}) + "\n")
            events += size
    return events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/logbert-memory")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = untrained_model_dir(None, None, str(work / "model"))
    rng = np.random.default_rng(0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    for name, count, length in (("1k sessions", 1000, None), ("20k sessions", 20000, None),
                                ("one 100,000-event session", 1, 100_000)):
        sessions = work / f"{count}-{length}.jsonl"
        events = write_sessions(sessions, count, length, rng)
        started = time.perf_counter()
        completed = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "logbert", "score", "--model",
                                    model, "--input", str(sessions), "--output", str(work / "scores.jsonl"),
                                    "--return_events", "false"], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - started
        peak_kb = int(completed.stderr.strip().splitlines()[-1]) if completed.returncode == 0 else None
        print(json.dumps({"case": name, "sessions": count, "events": events, "exit_code": completed.returncode,
                          "peak_rss_mb": peak_kb and round(peak_kb / 1024), "wall_s": round(elapsed, 1)}),
              flush=True)
        if completed.returncode:
            print(completed.stderr[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
