"""`LogAnomalyPipeline`: the `log-anomaly` task, scoring log sessions with a trained LogBERT.

This file and scoring.py are written next to every exported model (`save_pretrained`), so a model pushed to
the hub loads with `pipeline(model=REPO, trust_remote_code=True)`; they import only torch, numpy and
transformers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .scoring import SCORE_NAMES, count_vector_key, event_scores, session_scores, window_spans

logger = logging.getLogger(__name__)

TASK = "log-anomaly"
DEFAULT_NUM_CANDIDATES = 5
DEFAULT_SCORE_NAME = "next_max_nll"
TOKEN_IDS_KIND = "token_ids"
# Fingerprints (scoring.count_vector_key) of the event multisets of the training sessions, saved with the model.
KNOWN_COUNT_VECTORS_FILE = "known_count_vectors.npy"
# What a model row scores: an event with the whole session around it, an event from the events before it only
# (in the end slot), or the end slot after the whole session ([SEP]).
MASKED, NEXT, END_SLOT = "masked", "next", "end"


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
    (deterministic: no random masks). Sessions longer than the model are scored in overlapping windows, and
    identical sessions are scored once. Keyword arguments (at construction or per call):
    `threshold`, `num_candidates`, `score_name`, `top_n` (candidates listed per event), `return_events`,
    `batch_tokens` (tokens per forward pass, bounding memory), `known_normal_gate`.

    Known-normal gate: when the model folder holds `known_count_vectors.npy` (training writes it), a session whose
    event multiset occurs in the training data gets `anomaly_score` 0: training declared exactly that mix of events
    normal, and only the order can differ. `model_score` keeps the model's own score; `known_normal_gate=False`
    turns the gate off.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

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
        self.id_to_event = {index: token for token, index in tokenizer.get_vocab().items()}
        self._cache: dict[tuple, dict] = {}
        self.known_count_vectors = _load_known_count_vectors(getattr(config, "_name_or_path", None)
                                                             or getattr(self.model, "name_or_path", None))

    def save_pretrained(self, save_directory, **kwargs):
        """The model, tokenizer and pipeline code, plus the known-normal fingerprints when this pipeline has them."""
        super().save_pretrained(save_directory, **kwargs)
        if self.known_count_vectors is not None:
            write_known_count_vectors(save_directory, self.known_count_vectors)

    # ---- Pipeline interface ---------------------------------------------------------------------------------------

    def _sanitize_parameters(self, threshold=None, num_candidates=None, score_name=None, top_n=None,
                             return_events=None, batch_tokens=None, known_normal_gate=None, **kwargs):
        postprocess = {}
        for name, value in (("threshold", threshold), ("num_candidates", num_candidates),
                            ("score_name", score_name), ("top_n", top_n), ("return_events", return_events),
                            ("batch_tokens", batch_tokens), ("known_normal_gate", known_normal_gate)):
            if value is not None:
                postprocess[name] = value
        return {}, {}, postprocess

    def preprocess(self, session: Any) -> dict:
        """One session -> {"input_ids": event token ids (no [CLS]/[SEP]), "events": names, "session_id"}."""
        session_id = None
        token_ids = None
        if isinstance(session, dict):
            session_id = session.get("session_id", session.get("block_id"))
            token_ids = session.get("token_ids")
            events = session.get("event_sequence", session.get("event_ids"))
            if token_ids is not None:
                mask = session.get("attention_mask") or [1] * len(token_ids)
                token_ids = [int(t) for t, m in zip(token_ids, mask) if m]
            elif events is None:
                raise ValueError(f"session {session_id or ''}: expected 'token_ids' or 'event_sequence'")
        elif isinstance(session, str):
            events = session.split()
        elif isinstance(session, (list, tuple)):
            events = list(session)
        else:
            raise ValueError(f"a session is a list of event IDs, a string or a session object, got {type(session)}")

        tokenizer = self.tokenizer
        if self.input_kind == TOKEN_IDS_KIND:
            if token_ids is None:
                raise ValueError("this model was trained on 'token_ids': pass session objects that carry them")
            framing = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
            input_ids = [t for t in token_ids if t not in framing]
            input_ids = [t if 0 <= t < self.real_vocab_size else tokenizer.unk_token_id for t in input_ids]
            names = [str(e) for e in events] if events is not None and len(events) == len(input_ids) \
                else [self.id_to_event.get(t, str(t)) for t in input_ids]
        else:
            names = [str(e) for e in events]
            vocab = tokenizer.get_vocab()
            input_ids = [vocab.get(name, tokenizer.unk_token_id) for name in names]
        if not input_ids:
            raise ValueError(f"empty session{' ' + str(session_id) if session_id else ''}: expected at least one event")
        return {"input_ids": input_ids, "events": names, "session_id": session_id}

    def _forward(self, model_inputs: dict) -> dict:
        """Logits only at the masked position of each row: (R, T) -> (R, V)."""
        input_ids, attention_mask, positions = (model_inputs["input_ids"], model_inputs["attention_mask"],
                                                model_inputs["positions"])
        encoder, head = getattr(self.model, "bert", None), getattr(self.model, "cls", None)
        rows = torch.arange(len(positions), device=input_ids.device)
        if encoder is not None and head is not None:
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (R, T, H)
            logits = head(hidden[rows, positions])  # (R, V_padded)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, positions]
        logits = logits[:, : self.real_vocab_size]
        return {"logits": logits, "targets": model_inputs["targets"]}

    def postprocess(self, model_outputs, **kwargs):
        return model_outputs

    # ---- Batched scoring ------------------------------------------------------------------------------------------

    def __call__(self, inputs, **kwargs):
        """Score one session or a list of sessions (see the class docstring)."""
        single = _is_single_session(inputs)
        sessions = [inputs] if single else list(inputs)
        _, _, params = self._sanitize_parameters(**kwargs)
        params = {**self._postprocess_params, **params}
        results = self.score(sessions, **params)
        return results[0] if single else results

    def score(self, sessions: list, threshold: float | None = None, num_candidates: int | None = None,
              score_name: str | None = None, top_n: int = 3, return_events: bool = True,
              batch_tokens: int = 65536, known_normal_gate: bool | None = None) -> list[dict]:
        config = self.model.config
        threshold = getattr(config, "anomaly_threshold", None) if threshold is None else threshold
        num_candidates = num_candidates or getattr(config, "num_candidates", None) or DEFAULT_NUM_CANDIDATES
        score_name = score_name or getattr(config, "score_name", None) or DEFAULT_SCORE_NAME
        if score_name not in SCORE_NAMES:
            raise ValueError(f"score_name {score_name!r} is not one of {', '.join(SCORE_NAMES)}")
        known = self.known_count_vectors if known_normal_gate in (None, True) else None

        prepared = [self.preprocess(session) for session in sessions]
        unique = {}
        for item in prepared:
            unique.setdefault(tuple(item["input_ids"]), item)
        pending = [key for key in unique if (key, top_n) not in self._cache]
        for key, per_event in zip(pending, self._score_unique(pending, top_n, batch_tokens)):
            self._cache[(key, top_n)] = per_event

        results = []
        for item in prepared:
            per_event = self._cache[(tuple(item["input_ids"]), top_n)]
            unseen = np.asarray(item["input_ids"]) == self.tokenizer.unk_token_id
            scores = session_scores(per_event["nll"], per_event["rank"], unseen, num_candidates,
                                    float(per_event["end_nll"][0]), per_event["next_nll"])
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
                result["events"] = [
                    {
                        "position": position,
                        "event": item["events"][position],
                        "probability": float(per_event["probability"][position]),
                        "rank": int(per_event["rank"][position]),
                        # P(event | the events before it): None for the first event, which has no context.
                        "next_probability": float(per_event["next_probability"][position]) if position else None,
                        "is_miss": bool(per_event["rank"][position] > num_candidates or unseen[position]),
                        "unseen": bool(unseen[position]),
                        "top_candidates": [
                            {"event": self.id_to_event.get(int(i), str(int(i))), "probability": float(p)}
                            for i, p in zip(per_event["top_ids"][position], per_event["top_probs"][position])
                        ],
                    }
                    for position in range(len(item["input_ids"]))
                ]
            results.append(result)
        if len(self._cache) > 200_000:  # bounded memory for long streams
            self._cache.clear()
        return results

    def _score_unique(self, keys: list[tuple], top_n: int, batch_tokens: int) -> list[dict]:
        """Per-event results of each distinct session, batched across sessions.

        Rows: each event masked inside its window (MASKED); each event after the first predicted from the events
        before it in the end slot (NEXT); the end slot after the whole session, whose answer is [SEP] (END_SLOT).
        """
        tokenizer = self.tokenizer
        cls_id, sep_id, mask_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
        rows = []  # (length, session index, event index, tokens with the target in place, target position, kind)
        cls_tensor = torch.tensor([cls_id])
        for session_index, key in enumerate(keys):
            events = torch.tensor(key)
            windows = window_spans(len(key), self.max_events)
            for window in windows:  # one tensor per window, shared by the rows that mask its events
                window_tokens = torch.tensor([cls_id, *key[window.start: window.end], sep_id])
                for event_index in range(window.score_start, window.score_end):
                    rows.append((len(window_tokens), session_index, event_index, window_tokens,
                                 event_index - window.start + 1, MASKED))
            for event_index in range(1, len(key)):
                start = max(0, event_index - self.max_events)
                tokens = torch.cat((cls_tensor, events[start: event_index + 1]))
                rows.append((len(tokens), session_index, event_index, tokens, len(tokens) - 1, NEXT))
            # The end slot: the last window with its [SEP] masked.
            rows.append((len(window_tokens), session_index, -1, window_tokens, len(window_tokens) - 1, END_SLOT))
        rows.sort(key=lambda row: row[0])  # similar lengths together: little padding

        outputs = [{"nll": np.zeros(len(k)), "rank": np.zeros(len(k), dtype=np.int64),
                    "probability": np.zeros(len(k)), "top_ids": np.zeros((len(k), top_n), dtype=np.int64),
                    "top_probs": np.zeros((len(k), top_n)), "next_nll": np.full(len(k), np.nan),
                    "next_probability": np.full(len(k), np.nan), "end_nll": np.zeros(1),
                    "end_probability": np.zeros(1)}
                   for k in keys]
        start = 0
        while start < len(rows):
            padded = -(-rows[start][0] // 8) * 8
            count = max(1, batch_tokens // padded)
            batch = rows[start: start + count]
            start += len(batch)
            length = -(-batch[-1][0] // 8) * 8
            input_ids = torch.full((len(batch), length), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, (size, _, _, tokens, _, _) in enumerate(batch):
                input_ids[row, :size] = tokens
                attention_mask[row, :size] = 1
            positions = torch.tensor([row[4] for row in batch])
            targets = input_ids[torch.arange(len(batch)), positions].clone()
            input_ids[torch.arange(len(batch)), positions] = mask_id
            out = self.forward({"input_ids": input_ids, "attention_mask": attention_mask, "positions": positions,
                                "targets": targets})
            logits = out["logits"].float()
            # [SEP] is a candidate only in the end slot (it was trained there); inside a session it is never the answer.
            inside = torch.tensor([row[5] == MASKED for row in batch], device=logits.device)
            logits[inside, sep_id] = float("-inf")
            scored = event_scores(logits, out["targets"], self.never_predicted_ids, top_n)
            scored = {name: value.cpu().numpy() for name, value in scored.items()}
            for row, (_, session_index, event_index, _, _, kind) in enumerate(batch):
                target = outputs[session_index]
                if kind == END_SLOT:
                    target["end_nll"][0] = scored["nll"][row]
                    target["end_probability"][0] = scored["probability"][row]
                elif kind == NEXT:
                    target["next_nll"][event_index] = scored["nll"][row]
                    target["next_probability"][event_index] = scored["probability"][row]
                else:
                    for name in ("nll", "rank", "probability", "top_ids", "top_probs"):
                        target[name][event_index] = scored[name][row]
        return outputs


def _load_known_count_vectors(model_path: str | None) -> frozenset | None:
    """The training sessions' event-multiset fingerprints saved with the model, or None when there are none."""
    if not model_path:
        return None
    path = os.path.join(model_path, KNOWN_COUNT_VECTORS_FILE)
    if not os.path.isdir(model_path):  # a hub repository: the file is optional
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(model_path, KNOWN_COUNT_VECTORS_FILE)
        except Exception:  # noqa: BLE001 - no such file, offline, or no such repo: no gate
            return None
    if not os.path.exists(path):
        return None
    return frozenset(np.load(path).tolist())


def write_known_count_vectors(directory, keys) -> str:
    """Save fingerprints (scoring.count_vector_key) as a sorted int64 array; what the pipeline loads."""
    path = os.path.join(str(directory), KNOWN_COUNT_VECTORS_FILE)
    np.save(path, np.array(sorted(keys), dtype=np.int64))
    return path


def _is_single_session(inputs: Any) -> bool:
    """A dict or a string is one session; a list is one session when its items are event IDs, not sessions.

    A list of strings is a list of sessions when some string holds a space ("5 22 11"); pass a list of lists
    for several sessions of one event each.
    """
    if isinstance(inputs, (dict, str)):
        return True
    if isinstance(inputs, Iterable):
        items = list(inputs) if not isinstance(inputs, (list, tuple)) else inputs
        if not items:
            return False
        first = items[0]
        if isinstance(first, (dict, list, tuple)):
            return False
        if isinstance(first, str):
            return not any(" " in item.strip() for item in items if isinstance(item, str))
        return True
    return True


PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=LogAnomalyPipeline, pt_model=AutoModelForMaskedLM, type="text",
)
