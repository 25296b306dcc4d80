"""`LogAnomalyPipeline`: the `log-anomaly` task, scoring log sessions with a trained LogBERT.

This file and scoring.py are written next to every exported model (`save_pretrained`), so a model pushed to
the hub loads with `pipeline(model=REPO, trust_remote_code=True)`; they import only torch, numpy and
transformers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .model_files import (KNOWN_COUNT_VECTORS_FILE, PARSER_STATE_FILE, load_known_count_vectors,  # noqa: F401
                          load_templates, write_known_count_vectors)
from .session import FRAME_TOKEN_IDS, SessionError, is_single_session, is_stream, normalize_session
from .scoring import (DEFAULT_MLM_PROBABILITY, DEFAULT_NEXT_EVENT_WINDOW, DEFAULT_SCORING_MODE,
                      LEFT_TO_RIGHT_SCORES, SCORE_NAMES, SCORING_MODES, NonFiniteScoreError, count_vector_key,
                      event_scores, masking_groups, next_event_context, num_masking_replicas, session_scores,
                      window_spans)

logger = logging.getLogger(__name__)

TASK = "log-anomaly"
DEFAULT_NUM_CANDIDATES = 5
DEFAULT_SCORE_NAME = "next_max_nll"
TOKEN_IDS_KIND = "token_ids"
# What a model row scores: an event with the whole session around it, an event from the events before it only
# (in the end slot), or the end slot after the whole session ([SEP]).
MASKED, NEXT, END_SLOT = 0, 1, 2
# Session scores that come from the masked (both-sides) rows; None when `masked_scores=False` skipped them.
MASKED_ROW_SCORES = ("miss_ratio", "mean_nll", "max_nll", "num_misses", "combined")
# Logit entries (positions x vocabulary) reduced at once on the device: bounds the head's memory for any batch.
LOGIT_ELEMENTS_PER_CHUNK = 1 << 24


class LogAnomalyPipeline(Pipeline):
    """Score log sessions: `pipeline("log-anomaly", model=MODEL_DIR)(sessions)`.

    A session is a list of event IDs, a string of space-separated event IDs, or a session object in the
    reference JSON format (`token_ids` / `attention_mask` / `event_sequence`, optional `session_id`). A list of
    such sessions returns a list of results; one session returns one result:

        {"anomaly_score", "is_anomaly", "threshold", "score_name", "model_score", "known_count_vector",
         "miss_ratio", "mean_nll", "max_nll", "end_nll", "next_max_nll", "num_misses", "num_unseen",
         "num_events", "events": [{"position", "event", "probability", "rank", "next_probability", "is_miss",
         "unseen", "top_candidates": [{"event", "probability"}, ...]}, ...]}

    Every event is masked once, and every event after the first is also predicted from the events before it
    (deterministic: no random masks). `scoring_mode="linear"` (the default) masks every k-th event per row
    (k = round(1 / mlm_probability), as in training) and predicts event i from at most `next_event_window` events
    before it: O(L) tokens for L events. `scoring_mode="exhaustive"` masks each event alone and predicts it from
    its whole prefix: O(L^2). Sessions longer than the model are scored in overlapping windows, and identical
    sessions are scored once (a bounded LRU cache across calls). Keyword arguments (at construction or per call):
    `threshold`, `num_candidates`, `score_name`, `top_n` (candidates listed per event), `return_events`,
    `batch_tokens` (padded tokens per forward pass, bounding memory), `batch_size` (rows per forward pass, at
    most), `known_normal_gate`, `scoring_mode`, `next_event_window`, `masked_scores`, and `num_workers` (processes
    that preprocess a list or stream of sessions while this one scores, as in transformers pipelines).

    `masked_scores=False` skips the masked (both-sides) rows, about two thirds of the work on HDFS: only the
    left-to-right scores and the ending are computed, which is all that `next_max_nll` (the default score) and
    `end_nll` need. The verdict is the same; the fields that come from the masked rows (`miss_ratio`, `mean_nll`,
    `max_nll`, `num_misses`, and per event `probability`, `rank`, `is_miss`, `top_candidates`) are None.

    Known-normal gate: when the model folder holds `known_count_vectors.npy` (training writes it), a session whose
    event multiset occurs in the training data gets `anomaly_score` 0: training declared exactly that mix of events
    normal, and only the order can differ. `model_score` keeps the model's own score; `known_normal_gate=False`
    turns the gate off.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True
    # The LRU cache keeps per-event results of at most this many distinct sessions and events in all (~90 bytes an
    # event: ~100 MB at the bound, whatever the session lengths).
    cache_size = 100_000
    cache_events = 1_000_000
    _warned_unused: set = set()  # replaced per instance on the first warning (see _sanitize_parameters)
    # Called after every forward pass when set: `logbert.cli.load_detector` hands freed memory back to the OS there.
    after_forward = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.model.config
        self.input_kind = getattr(config, "input_kind", "events")
        self.real_vocab_size = getattr(config, "tokenizer_vocab_size", None) or len(self.tokenizer)
        self.max_events = config.max_position_embeddings - 2  # room for [CLS] and [SEP]
        tokenizer = self.tokenizer
        # [SEP] stays a candidate: "the session ends here" is what the end slot predicts.
        self.never_predicted_ids = sorted({tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id,
                                           tokenizer.unk_token_id})
        self.event_to_id = tokenizer.get_vocab()  # built once: get_vocab() makes a new dict on every call
        self.id_to_event = {index: token for token, index in self.event_to_id.items()}
        # Per-event results of recently scored distinct sessions (real logs repeat many), least recently used first.
        self._cache: OrderedDict[tuple, dict] = OrderedDict()
        self._cached_events = 0
        self.num_replicas = num_masking_replicas(getattr(config, "mlm_probability", None) or DEFAULT_MLM_PROBABILITY)
        self._warned_no_threshold = False
        model_path = getattr(config, "_name_or_path", None) or getattr(self.model, "name_or_path", None)
        self.known_count_vectors = load_known_count_vectors(model_path)
        # Event id -> template text, when the model was trained on `logbert prepare` output: shown beside the id.
        self.templates = load_templates(model_path)

    def save_pretrained(self, save_directory, **kwargs):
        """The model, tokenizer and pipeline code, plus the known-normal fingerprints when this pipeline has them."""
        super().save_pretrained(save_directory, **kwargs)
        if self.known_count_vectors is not None:
            write_known_count_vectors(save_directory, self.known_count_vectors)

    # ---- Pipeline interface ---------------------------------------------------------------------------------------

    def _sanitize_parameters(self, threshold=None, num_candidates=None, score_name=None, top_n=None,
                             return_events=None, batch_tokens=None, known_normal_gate=None, scoring_mode=None,
                             next_event_window=None, batch_size=None, masked_scores=None, **kwargs):
        postprocess = {}
        for name, value in (("threshold", threshold), ("num_candidates", num_candidates),
                            ("score_name", score_name), ("top_n", top_n), ("return_events", return_events),
                            ("batch_tokens", batch_tokens), ("known_normal_gate", known_normal_gate),
                            ("scoring_mode", scoring_mode), ("next_event_window", next_event_window),
                            ("batch_size", batch_size), ("masked_scores", masked_scores)):
            if value is not None:
                postprocess[name] = value
        unused = sorted(name for name, value in kwargs.items() if value is not None)
        if unused and not self._warned_unused.issuperset(unused):
            # Never dropped silently: e.g. a typo.
            logger.warning("LogAnomalyPipeline does not use %s: ignored", ", ".join(unused))
            self._warned_unused = self._warned_unused | set(unused)
        return {}, {}, postprocess

    def preprocess(self, session: Any) -> dict:
        """One session -> {"input_ids": event token ids (no [CLS]/[SEP]), "events": names, "event_names": the
        session's own names when they differ from the tokenizer's (token-id models), "session_id"}.

        Validated by `session.normalize_session`, with training's rules and messages (SessionError, a ValueError).
        """
        normal = normalize_session(session.tolist() if isinstance(session, np.ndarray) else session)
        session_id = normal.session_id or None
        tokenizer = self.tokenizer
        if self.input_kind == TOKEN_IDS_KIND:
            if normal.token_ids is None:
                raise SessionError("this model was trained on 'token_ids': pass session objects that carry them, "
                                   f"not event IDs ({session_id or 'session'})")
            input_ids = [t for t in normal.token_ids if t not in FRAME_TOKEN_IDS]
            input_ids = [t if 0 <= t < self.real_vocab_size else tokenizer.unk_token_id for t in input_ids]
            # Events are named as the candidates are (the tokenizer's "#<id>"), so the two compare at a glance; the
            # session's own names, when it has them, come along as "event_name".
            names = [self.id_to_event.get(t, str(t)) for t in input_ids]
            events = session.get("event_sequence") if isinstance(session, dict) else None
            own_names = [str(e) for e in events] if isinstance(events, list) and len(events) == len(input_ids) \
                else None
        else:
            if normal.events is None:
                raise SessionError("this model was trained on event IDs: pass 'event_sequence' (or a list or string "
                                   f"of event IDs), not 'token_ids' ({session_id or 'session'})")
            names, own_names = normal.events, None
            vocab, unknown = self.event_to_id, tokenizer.unk_token_id
            input_ids = [vocab.get(name, unknown) for name in names]
        if not input_ids:
            raise SessionError(f"empty session{' ' + str(session_id) if session_id else ''}: expected at least one "
                               "event")
        return {"input_ids": input_ids, "events": names, "event_names": own_names, "session_id": session_id}

    def _forward(self, model_inputs: dict, top_n: int = 3) -> dict:
        """Scores of the true event at each masked position, reduced on the device.

        Only the true event's probability, negative log-likelihood and rank and the `top_n` candidates leave the
        device, never a full-vocabulary tensor: (R, T) rows -> (M,) and (M, top_n) for M masked positions.
        """
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        position_ids = model_inputs.get("position_ids")
        rows, positions = model_inputs["row_index"], model_inputs["positions"]
        encoder, head = getattr(self.model, "bert", None), getattr(self.model, "cls", None)
        if encoder is not None and head is not None:
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids).last_hidden_state  # (R, T, H)
            picked = hidden[rows, positions]  # (M, H)
        else:
            picked = None
            all_logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                    position_ids=position_ids).logits[rows, positions]
        sep_id = self.tokenizer.sep_token_id
        num_ranked = int(model_inputs["num_ranked"])  # the leading predictions that need a rank and candidates
        outputs = []
        # The head's (chunk, V) logits are the largest tensors: a bounded number of positions at once.
        chunk = max(1, LOGIT_ELEMENTS_PER_CHUNK // self.real_vocab_size)
        for begin in range(0, len(positions), chunk):
            part = slice(begin, begin + chunk)
            logits = head(picked[part]) if picked is not None else all_logits[part]  # (m, V_padded)
            logits = logits[:, : self.real_vocab_size].float()
            logits[:, self.never_predicted_ids] = float("-inf")  # in place: this chunk's own tensor
            logits[~model_inputs["sep_allowed"][part], sep_id] = float("-inf")
            outputs.append(event_scores(logits, model_inputs["targets"][part], [], top_n,
                                        num_ranked=max(0, num_ranked - begin)))
        scored = {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]}
        broken = ~torch.isfinite(scored["nll"])
        if broken.any():
            raise NonFiniteScoreError(
                f"the model gave non-finite log-probabilities (NaN or infinity) for {int(broken.sum())} of "
                f"{len(broken)} events: its weights or configuration are broken (e.g. a NaN in model.safetensors); "
                "no verdict can be given")
        return scored

    def postprocess(self, model_outputs, **kwargs):
        return model_outputs

    # ---- Batched scoring ------------------------------------------------------------------------------------------

    def __call__(self, inputs, **kwargs):
        """Score one session, a list of sessions, or a stream of them (see the class docstring).

        A generator, iterator or dataset (e.g. `KeyDataset`) is a stream of sessions: the results come back as an
        iterator, scored a chunk at a time, as transformers pipelines do with generators.

        Why not transformers' ChunkPipeline batching: it batches one session's rows in arrival order, so a batch
        mixes ~12-token windows with whole-session replicas and pads them all to the longest, and it cannot score
        a window that many sessions share once. The same rows and reductions as a ChunkPipeline
        (benchmarks/bench_chunk_pipeline.py, batch_size 64 or 256, same run, scores equal to 3e-6) were 2.6x
        slower on distinct HDFS test sessions, 8.3-8.5x with their repeats, 2.9-7.9x on reference-like ones.
        """
        num_workers = kwargs.pop("num_workers", None)
        num_workers = getattr(self, "_num_workers", None) if num_workers is None else num_workers
        _, _, params = self._sanitize_parameters(**kwargs)
        params = {**self._postprocess_params, **params}
        if is_stream(inputs):
            return self._score_stream(inputs, params, num_workers or 0)
        if isinstance(inputs, np.ndarray):
            inputs = inputs.tolist()
        single = is_single_session(inputs)
        sessions = [inputs] if single else list(inputs)
        if num_workers and not single:
            return list(self._score_stream(sessions, params, num_workers))
        results = self.score(sessions, **params)
        return results[0] if single else results

    def _score_stream(self, inputs, params: dict, num_workers: int = 0, chunk_size: int = 1024):
        for chunk in self._preprocessed_chunks(inputs, num_workers, chunk_size):
            yield from self._score_preprocessed(chunk, **params)

    def _preprocessed_chunks(self, inputs, num_workers: int, chunk_size: int):
        """`preprocess`ed sessions, `chunk_size` at a time, in input order.

        With `num_workers` > 0, as in transformers pipelines, preprocessing runs in DataLoader worker processes while
        this one scores the previous chunk. A stream without a length gets one worker, as transformers gives it:
        several would each read the whole stream. The default is 0: on 2 CPU cores, 6,000 HDFS sessions went at
        1,156-1,200 sessions/s without workers and 879-945 with 1 or 2 (workers compete with the model for the
        cores, and preprocessing is ~2% of the work); workers are for a model that runs on a GPU.
        """
        if not num_workers:
            items = (inputs[index] for index in range(len(inputs))) if not isinstance(inputs, Iterable) else inputs
            chunk = []
            for index, session in enumerate(items):
                chunk.append(self._preprocess_numbered(session, index))
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
        from torch.utils.data import DataLoader
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        indexable = hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__")
        dataset = (PipelineDataset(inputs, self._preprocess_in_worker, {}) if indexable
                   else PipelineIterator(inputs, self._preprocess_in_worker, {}))
        loader = DataLoader(dataset, batch_size=chunk_size, num_workers=num_workers if indexable else 1,
                            collate_fn=list)
        for number, chunk in enumerate(loader):
            for index, item in enumerate(chunk, start=number * chunk_size):
                if "error" in item:  # the worker's own message, not a traceback from another process
                    raise SessionError(item["error"], item["where"] or f"sessions[{index}]")
            yield chunk

    def _preprocess_numbered(self, session: Any, index: int) -> dict:
        """`preprocess`, its error naming the session's place in the input (`sessions[3]: empty session ...`)."""
        try:
            return self.preprocess(session)
        except SessionError as error:
            if error.where:
                raise
            numbered = SessionError(error.reason, f"sessions[{index}]")
            numbered.index = index  # callers that read sessions from files name the file and record instead
            raise numbered from None

    def _preprocess_in_worker(self, session: Any) -> dict:
        try:
            return self.preprocess(session)
        except SessionError as error:
            return {"error": error.reason, "where": error.where}

    def score(self, sessions: list, **settings) -> list[dict]:
        """Results of `sessions` (a list), in order; `settings` are the keywords of the class docstring."""
        prepared = [self._preprocess_numbered(session, index) for index, session in enumerate(sessions)]
        return self._score_preprocessed(prepared, **settings)

    def _score_preprocessed(self, prepared: list[dict], threshold: float | None = None,
                            num_candidates: int | None = None, score_name: str | None = None, top_n: int = 3,
                            return_events: bool = True, batch_tokens: int = 65536,
                            known_normal_gate: bool | None = None, scoring_mode: str | None = None,
                            next_event_window: int | None = None, batch_size: int | None = None,
                            masked_scores: bool = True) -> list[dict]:
        config = self.model.config
        batch_size = batch_size or getattr(self, "_batch_size", None)
        threshold = getattr(config, "anomaly_threshold", None) if threshold is None else threshold
        if threshold is None and not self._warned_no_threshold:
            logger.warning("This model has no calibrated threshold (a run stopped before calibration, or an older "
                           "config.json): is_anomaly is null for every session. Run logbert-calibrate on normal "
                           "sessions, or pass threshold=.")
            self._warned_no_threshold = True
        num_candidates = num_candidates or getattr(config, "num_candidates", None) or DEFAULT_NUM_CANDIDATES
        score_name = score_name or getattr(config, "score_name", None) or DEFAULT_SCORE_NAME
        if score_name not in SCORE_NAMES:
            raise ValueError(f"score_name {score_name!r} is not one of {', '.join(SCORE_NAMES)}")
        if not masked_scores and score_name not in LEFT_TO_RIGHT_SCORES:
            raise ValueError(f"score_name {score_name!r} needs the masked scores: with masked_scores=False only "
                             f"{' and '.join(LEFT_TO_RIGHT_SCORES)} are computed")
        scoring_mode = scoring_mode or getattr(config, "scoring_mode", None) or DEFAULT_SCORING_MODE
        if scoring_mode not in SCORING_MODES:
            raise ValueError(f"scoring_mode {scoring_mode!r} is not one of {', '.join(SCORING_MODES)}")
        next_event_window = (next_event_window or getattr(config, "next_event_window", None)
                             or DEFAULT_NEXT_EVENT_WINDOW)
        if next_event_window < 1:
            raise ValueError(f"next_event_window must be at least 1, got {next_event_window}")
        longest_row = self._padded_length(self.max_events + 2)
        if batch_tokens < longest_row:
            raise ValueError(f"batch_tokens {batch_tokens} cannot hold one row of this model ({longest_row} tokens, "
                             f"its max_position_embeddings): raise it to at least {longest_row}")
        known = self.known_count_vectors if known_normal_gate in (None, True) else None

        mode_key = (top_n, scoring_mode, next_event_window if scoring_mode != "exhaustive" else None,
                    bool(masked_scores))
        per_session: dict[tuple, dict] = {}  # this call's results: the LRU cache may evict before they are read
        for item in prepared:
            key = tuple(item["input_ids"])
            if key not in per_session and (cached := self._cache.get((key, mode_key))) is not None:
                self._cache.move_to_end((key, mode_key))
                per_session[key] = cached
        pending = list(dict.fromkeys(tuple(item["input_ids"]) for item in prepared
                                     if tuple(item["input_ids"]) not in per_session))
        if not self._cache:
            self._cached_events = 0
        for key, per_event in zip(pending, self._score_unique(pending, top_n, batch_tokens, scoring_mode,
                                                              next_event_window, batch_size, masked_scores)):
            per_session[key] = per_event
            self._cache[(key, mode_key)] = per_event
            self._cached_events += len(key)
        # Bounded memory for long streams: least recently used first.
        while self._cache and (len(self._cache) > self.cache_size or self._cached_events > self.cache_events):
            (evicted, _), _ = self._cache.popitem(last=False)
            self._cached_events -= len(evicted)

        results = []
        for item in prepared:
            per_event = per_session[tuple(item["input_ids"])]
            unseen = np.asarray(item["input_ids"]) == self.tokenizer.unk_token_id
            scores = session_scores(per_event["nll"], per_event["rank"], unseen, num_candidates,
                                    float(per_event["end_nll"]), per_event["next_nll"])
            if not masked_scores:  # never computed: None, not the zeros the arrays were filled with
                scores.update(dict.fromkeys(MASKED_ROW_SCORES))
            # A session with an [UNK] is never known: two different unseen events both read as [UNK].
            known_normal = known is not None and not unseen.any() and count_vector_key(item["input_ids"]) in known
            anomaly_score = 0.0 if known_normal else scores[score_name]
            result = {
                "anomaly_score": anomaly_score,
                "is_anomaly": None if threshold is None else bool(anomaly_score > threshold),
                "threshold": threshold,
                "score_name": score_name,
                "model_score": scores[score_name],
                "known_count_vector": None if known is None else known_normal,
                **{k: scores[k] for k in ("miss_ratio", "mean_nll", "max_nll", "end_nll", "next_max_nll",
                                          "num_misses", "num_unseen")},
                "num_events": len(item["input_ids"]),
            }
            if item["session_id"] is not None:
                result = {"session_id": item["session_id"], **result}
            if return_events:
                result["events"] = self._event_details(item, per_event, unseen, num_candidates, masked_scores)
            results.append(result)
        return results

    def _event_details(self, item: dict, per_event: dict, unseen: np.ndarray, num_candidates: int,
                       masked: bool = True) -> list[dict]:
        """Per-event results; without `masked` rows (masked_scores=False) their fields are None."""
        own_names = item.get("event_names")
        return [
            {
                "position": position,
                "event": item["events"][position],
                **({"event_name": own_names[position]} if own_names else {}),
                **({"template": self.templates.get(item["events"][position])} if self.templates else {}),
                "probability": float(per_event["probability"][position]) if masked else None,
                "rank": int(per_event["rank"][position]) if masked else None,
                # P(event | the events before it): None for the first event, which has no context.
                "next_probability": float(per_event["next_probability"][position]) if position else None,
                "is_miss": bool(per_event["rank"][position] > num_candidates or unseen[position]) if masked else None,
                "unseen": bool(unseen[position]),
                "top_candidates": [
                    {"event": self.id_to_event.get(int(i), str(int(i))), "probability": float(p),
                     **({"template": self.templates.get(self.id_to_event.get(int(i)))} if self.templates else {})}
                    for i, p in zip(per_event["top_ids"][position], per_event["top_probs"][position])
                ] if masked else None,
            }
            for position in range(len(item["input_ids"]))
        ]

    def _padded_length(self, length: int) -> int:
        # Tensor cores want multiples of 8; on a CPU the extra positions are only wasted work.
        multiple = 8 if self.device.type == "cuda" else 1
        return -(-length // multiple) * multiple

    def _build_rows(self, keys: list[tuple], scoring_mode: str, next_event_window: int,
                    masked: bool = True) -> tuple[list, list]:
        """Model rows: (tokens with the targets in place, masked positions, kind, session, events, offset).

        MASKED rows: a window of the session between [CLS] and [SEP], with a group of its events masked
        (`masking_groups`: one event per row in exhaustive mode, every k-th event in linear mode). NEXT rows: the
        events before event i (at most `next_event_window` of them, or the model's length in exhaustive mode) and
        the end slot, whose answer is event i, at the positions they have in the session (`offset`: the position
        ids of the events start at offset + 1). The END_SLOT row: the last window with its [SEP] masked.
        `masked=False` builds no MASKED rows.
        A NEXT row identical to one already built (sessions share bounded contexts far more often than whole
        sessions) is not built again: it is returned in `copies` as ((session, event) scored, (session, event)
        that takes the same result).
        """
        tokenizer = self.tokenizer
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        exhaustive = scoring_mode == "exhaustive"
        replicas = None if exhaustive else self.num_replicas
        context = self.max_events if exhaustive else min(next_event_window, self.max_events)
        rows, copies, next_rows = [], [], {}
        for session_index, key in enumerate(keys):
            events = np.asarray(key, dtype=np.int64)
            for window in window_spans(len(events), self.max_events):
                # one array per window, shared by the rows that mask its events
                window_tokens = np.concatenate(([cls_id], events[window.start: window.end], [sep_id]))
                for group in masking_groups(window.score_start, window.score_end, replicas) if masked else ():
                    rows.append((window_tokens, group - window.start + 1, MASKED, session_index, group, 0))
            for event_index in range(1, len(events)):
                start, end = next_event_context(event_index, context)
                # Linear mode: the context keeps the positions its events have in the session. The end slot was
                # trained on prefixes from the session's start; a window read from position 1 looks like a session
                # that starts mid-way (HDFS AUROC 0.936 against 0.9996), read in place it does not (0.9996).
                offset = start if not exhaustive and end <= self.max_events else 0
                row_key = (offset, key[start: end + 1])  # where the row sits, the context and the target
                if (first := next_rows.setdefault(row_key, (session_index, event_index))) != (session_index,
                                                                                              event_index):
                    copies.append((first, (session_index, event_index)))
                    continue
                tokens = np.concatenate(([cls_id], events[start: end + 1]))  # the last one is the target
                rows.append((tokens, np.array([len(tokens) - 1]), NEXT, session_index, np.array([event_index]), offset))
            rows.append((window_tokens, np.array([len(window_tokens) - 1]), END_SLOT, session_index, np.array([0]), 0))
        return rows, copies

    def _score_unique(self, keys: list[tuple], top_n: int, batch_tokens: int, scoring_mode: str = DEFAULT_SCORING_MODE,
                      next_event_window: int = DEFAULT_NEXT_EVENT_WINDOW, batch_size: int | None = None,
                      masked: bool = True) -> list[dict]:
        """Per-event results of each distinct session, batched across sessions (see `_build_rows`).

        Rows are sorted by length and cut into batches whose padded size (rows x longest row) never exceeds
        `batch_tokens`, and of at most `batch_size` rows when one is given.
        """
        tokenizer = self.tokenizer
        rows, copies = self._build_rows(keys, scoring_mode, next_event_window, masked)
        rows.sort(key=lambda row: len(row[0]))  # similar lengths together: little padding
        padded = np.array([self._padded_length(len(row[0])) for row in rows], dtype=np.int64)

        # Flat per-event outputs of all sessions; session s owns [offsets[s], offsets[s + 1]).
        offsets = np.concatenate(([0], np.cumsum([len(key) for key in keys]))).astype(np.int64)
        total = int(offsets[-1])
        flat = {"nll": np.zeros(total), "rank": np.zeros(total, dtype=np.int64), "probability": np.zeros(total),
                "top_ids": np.zeros((total, top_n), dtype=np.int64), "top_probs": np.zeros((total, top_n)),
                "next_nll": np.full(total, np.nan), "next_probability": np.full(total, np.nan)}
        end_nll, end_probability = np.zeros(len(keys)), np.zeros(len(keys))

        start = 0
        while start < len(rows):
            end = _batch_end(padded, start, batch_tokens, batch_size)
            batch = rows[start:end]
            length = int(padded[end - 1])
            start = end
            input_ids = np.full((len(batch), length), tokenizer.pad_token_id, dtype=np.int64)
            attention_mask = np.zeros_like(input_ids)
            position_ids = np.broadcast_to(np.arange(length), input_ids.shape).copy()
            for row, (tokens, *_, offset) in enumerate(batch):
                input_ids[row, : len(tokens)] = tokens
                attention_mask[row, : len(tokens)] = 1
                position_ids[row, 1: len(tokens)] += offset  # padding keeps positions the model has
            counts = [len(row[1]) for row in batch]
            row_index = np.repeat(np.arange(len(batch)), counts)
            positions = np.concatenate([row[1] for row in batch])
            kinds = np.repeat([row[2] for row in batch], counts)
            sessions = np.repeat([row[3] for row in batch], counts)
            event_index = np.concatenate([row[4] for row in batch])
            # Masked events first: only they need a rank and candidates (see event_scores' num_ranked).
            order = np.argsort(kinds != MASKED, kind="stable")
            row_index, positions, kinds, sessions, event_index = (
                values[order] for values in (row_index, positions, kinds, sessions, event_index))
            targets = input_ids[row_index, positions].copy()
            input_ids[row_index, positions] = tokenizer.mask_token_id
            scored = self.forward({"input_ids": torch.from_numpy(input_ids),
                                   "attention_mask": torch.from_numpy(attention_mask),
                                   "position_ids": torch.from_numpy(position_ids),
                                   "row_index": torch.from_numpy(row_index), "positions": torch.from_numpy(positions),
                                   "targets": torch.from_numpy(targets),
                                   # [SEP] is a candidate only in the end slot (it was trained there); inside a
                                   # session it is never the answer.
                                   "sep_allowed": torch.from_numpy(kinds != MASKED),
                                   "num_ranked": int(np.sum(kinds == MASKED))}, top_n=top_n)
            scored = {name: value.numpy() for name, value in scored.items()}
            if self.after_forward is not None:
                self.after_forward()
            flat_index = offsets[sessions] + event_index
            for kind, names in ((MASKED, ("nll", "rank", "probability", "top_ids", "top_probs")),
                                (NEXT, ("nll", "probability"))):
                chosen = kinds == kind
                for name in names:
                    flat[("next_" + name) if kind == NEXT else name][flat_index[chosen]] = scored[name][chosen]
            chosen = kinds == END_SLOT
            end_nll[sessions[chosen]] = scored["nll"][chosen]
            end_probability[sessions[chosen]] = scored["probability"][chosen]
        if copies:
            scored_at, copied_to = (np.array([offsets[s] + e for s, e in pairs]) for pairs in zip(*copies))
            for name in ("next_nll", "next_probability"):
                flat[name][copied_to] = flat[name][scored_at]

        return [{**{name: values[offsets[s]: offsets[s + 1]].copy() for name, values in flat.items()},
                 "end_nll": float(end_nll[s]), "end_probability": float(end_probability[s])}
                for s in range(len(keys))]


def _batch_end(padded: np.ndarray, start: int, batch_tokens: int, batch_size: int | None = None) -> int:
    """End of the batch from `start` over rows sorted by padded length: rows x longest row <= batch_tokens.

    The batch is padded to its longest row, the last one, so the count is bounded by that row, not the first.
    """
    end = min(len(padded), start + max(1, batch_tokens // int(padded[start])), start + (batch_size or len(padded)))
    while end - start > 1 and (end - start) * int(padded[end - 1]) > batch_tokens:
        end = start + max(1, batch_tokens // int(padded[end - 1]))
    return end


PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=LogAnomalyPipeline, pt_model=AutoModelForMaskedLM, type="text",
)
