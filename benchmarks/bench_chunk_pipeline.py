#!/usr/bin/env python
"""Why `LogAnomalyPipeline` batches rows itself: the same scoring as a transformers `ChunkPipeline`, side by side.

    PYTHONPATH=. python benchmarks/bench_chunk_pipeline.py [--sessions 3000] [--batch-size 64]

A `ChunkPipeline` (transformers' contract for inputs that become several model rows: preprocess yields the rows
of one session, `_forward` runs a padded batch of them, postprocess assembles one session's rows) scores the
same rows with the same model and the same reductions (`logbert.scoring.event_scores`). What it cannot do is what
`LogAnomalyPipeline.score` does across sessions: sort the rows of many sessions by length before batching (a
session's rows range from ~12 tokens, the left-to-right windows, to the whole session, the masked replicas, and a
batch is padded to its longest row) and score a left-to-right window that many sessions share once. Both score
the HDFS DeepLog test sessions (hdfs-real; and its distinct sessions alone, which takes the cache out) and
reference-like long sessions (heavy) with an untrained default-size model; the script checks that they agree and
prints sessions/s of each, one after the other in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from transformers import pipeline
from transformers.pipelines.base import ChunkPipeline

from benchmarks.bench_score import hdfs_test_sessions, session_objects, untrained_model_dir
from logbert.pipeline import END_SLOT, MASKED, NEXT, LogAnomalyPipeline
from logbert.scoring import DEFAULT_MLM_PROBABILITY, event_scores, num_masking_replicas, session_scores


class ChunkedLogAnomalyPipeline(ChunkPipeline):
    """Linear scoring through transformers' ChunkPipeline machinery (no gate, no cache, no cross-session batching)."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The row building and input rules are LogAnomalyPipeline's own, borrowed so that both score alike.
        self.rows_of = LogAnomalyPipeline.__new__(LogAnomalyPipeline)
        self.rows_of.__dict__.update(self.__dict__)
        config = self.model.config
        self.rows_of.input_kind = getattr(config, "input_kind", "events")
        self.rows_of.real_vocab_size = getattr(config, "tokenizer_vocab_size", None) or len(self.tokenizer)
        self.rows_of.max_events = config.max_position_embeddings - 2
        self.rows_of.num_replicas = num_masking_replicas(getattr(config, "mlm_probability", None)
                                                         or DEFAULT_MLM_PROBABILITY)
        self.rows_of.id_to_event = {index: token for token, index in self.tokenizer.get_vocab().items()}
        tokenizer = self.tokenizer
        self.never_predicted_ids = sorted({tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id,
                                           tokenizer.unk_token_id})

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}

    def preprocess(self, session):
        item = LogAnomalyPipeline.preprocess(self.rows_of, session)
        key = tuple(item["input_ids"])
        rows, copies = LogAnomalyPipeline._build_rows(self.rows_of, [key], "linear", 10)
        for number, (tokens, positions, kind, _, event_index, offset) in enumerate(rows):
            length = len(tokens)
            masked = torch.as_tensor(tokens, dtype=torch.long).clone()
            masked[torch.as_tensor(positions)] = self.tokenizer.mask_token_id
            scored = torch.zeros(length, dtype=torch.long)
            scored[torch.as_tensor(positions)] = 1
            where = torch.zeros(length, dtype=torch.long)
            where[torch.as_tensor(positions)] = torch.as_tensor(event_index, dtype=torch.long)
            position_ids = torch.arange(length)
            position_ids[1:] += offset
            yield {"input_ids": masked[None], "attention_mask": torch.ones(1, length, dtype=torch.long),
                   "position_ids": position_ids[None], "targets": torch.as_tensor(tokens, dtype=torch.long)[None],
                   "scored": scored[None], "event_index": where[None], "kind": torch.tensor([[kind]]),
                   "num_events": torch.tensor([[len(key)]]), "copies": [copies], "is_last": number == len(rows) - 1}

    def _forward(self, inputs):
        is_last, copies = inputs.pop("is_last"), inputs.pop("copies")
        scored, targets = inputs.pop("scored").bool(), inputs.pop("targets")
        kind, event_index, num_events = inputs.pop("kind"), inputs.pop("event_index"), inputs.pop("num_events")
        hidden = self.model.bert(**inputs).last_hidden_state
        logits = self.model.cls(hidden[scored])[:, : self.rows_of.real_vocab_size].float()
        logits[:, self.never_predicted_ids] = float("-inf")
        row_kind = kind.expand_as(scored)[scored]
        logits[row_kind == MASKED, self.tokenizer.sep_token_id] = float("-inf")
        # Masked events first: only they get a rank and candidates, as in LogAnomalyPipeline.
        order = torch.argsort((row_kind != MASKED).int(), stable=True)
        result = event_scores(logits[order], targets[scored][order], [], 3,
                              num_ranked=int((row_kind == MASKED).sum()))
        out = {}
        for name, value in result.items():  # back to (rows, positions): unbatched per row by the pack iterator
            unsorted = torch.empty_like(value)
            unsorted[order] = value
            full = torch.zeros((*scored.shape, *value.shape[1:]), dtype=value.dtype)
            full[scored] = unsorted
            out[name] = full
        return {**out, "scored": scored, "kind": kind, "event_index": event_index, "num_events": num_events,
                "copies": copies, "is_last": is_last}

    def postprocess(self, rows):
        length = int(rows[0]["num_events"].reshape(-1)[0])
        nll, rank = np.zeros(length), np.zeros(length, dtype=np.int64)
        next_nll, end_nll = np.full(length, np.nan), 0.0
        for row in rows:
            scored = row["scored"].reshape(-1).numpy()
            kind = int(row["kind"].reshape(-1)[0])
            events = row["event_index"].reshape(-1).numpy()[scored]
            values, ranks = row["nll"].reshape(-1).numpy()[scored], row["rank"].reshape(-1).numpy()[scored]
            if kind == MASKED:
                nll[events], rank[events] = values, ranks
            elif kind == NEXT:
                next_nll[events] = values
            elif kind == END_SLOT:
                end_nll = float(values[0])
        for (_, scored_at), (_, copied_to) in rows[0]["copies"][0] if rows[0]["copies"] else []:
            next_nll[copied_to] = next_nll[scored_at]
        return session_scores(nll, rank, np.zeros(length, bool), 5, end_nll, next_nll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000, help="HDFS test sessions timed (from the start).")
    parser.add_argument("--batch-size", type=int, default=64, help="The ChunkPipeline's rows per forward pass.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        model_dir = untrained_model_dir(None, None, directory)
        ours = pipeline("log-anomaly", model=model_dir, pipeline_class=LogAnomalyPipeline, device="cpu")
        chunked = pipeline("log-anomaly", model=model_dir, pipeline_class=ChunkedLogAnomalyPipeline, device="cpu")
        hdfs = hdfs_test_sessions(args.sessions)
        distinct = list({tuple(s["token_ids"]): s for s in hdfs}.values())
        workloads = {"hdfs-real": hdfs, "hdfs-real, distinct only": distinct,
                     "heavy": session_objects(argparse.Namespace(data_dir=None, seed=0), "heavy", 24)}
        summary = {}
        for name, sessions in workloads.items():
            ours._cache.clear()  # every workload is scored, none answered from an earlier one
            started = time.perf_counter()
            expected = ours(sessions, return_events=False, threshold=0.0)
            ours_seconds = time.perf_counter() - started
            started = time.perf_counter()
            got = list(chunked(sessions, batch_size=args.batch_size))
            chunked_seconds = time.perf_counter() - started
            difference = max(abs(a["next_max_nll"] - b["next_max_nll"]) + abs(a["max_nll"] - b["max_nll"])
                             for a, b in zip(expected, got))
            summary[name] = {"sessions": len(sessions), "distinct": len({tuple(s["token_ids"]) for s in sessions}),
                             "log_anomaly_sessions_per_s": round(len(sessions) / ours_seconds, 1),
                             "chunk_pipeline_sessions_per_s": round(len(sessions) / chunked_seconds, 1),
                             "ratio": round(chunked_seconds / ours_seconds, 2),
                             "max_score_difference": difference}
            print(json.dumps({name: summary[name]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
