"""The event-ID vocabulary as a `PreTrainedTokenizerFast` that `AutoTokenizer.from_pretrained` restores."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable

import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .data import SEED_SPECIAL_IDS

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _wrap(vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    # A session is a whitespace-separated string of event IDs; each event ID is one token.
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
    )


def build_event_tokenizer(event_counts: Counter, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Vocabulary from the training events: the special tokens, then events by descending frequency.

    Events seen fewer than `min_frequency` times (and any event unseen in training) map to [UNK].
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    frequent = sorted((e for e, n in event_counts.items() if n >= min_frequency), key=lambda e: (-event_counts[e], e))
    for event in frequent:
        if event in vocab:
            raise ValueError(f"event ID {event!r} collides with a special token name")
        vocab[event] = len(vocab)
    rare = len(event_counts) - len(frequent)
    logger.info("Event vocabulary: %d events (+%d special tokens); %d rare events map to [UNK]",
                len(frequent), len(SPECIAL_TOKENS), rare)
    return _wrap(vocab)


def build_token_id_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """For data that already carries `token_ids`: the seed's id convention, kept as given.

    PAD=0, UNK=100, CLS=101, SEP=102, MASK=103 (BERT's uncased layout); every other id i is the token `#i`.
    """
    if vocab_size <= max(SEED_SPECIAL_IDS.values()):
        raise ValueError(f"--vocab_size {vocab_size} is too small for the token-id convention (needs > 103)")
    by_id = {index: token for token, index in SEED_SPECIAL_IDS.items()}
    vocab = {by_id.get(index, f"#{index}"): index for index in range(vocab_size)}
    return _wrap(vocab)


def count_events(dataset: Dataset) -> Counter:
    """Event frequencies of an `event_ids` column, computed in Arrow without a Python loop per event."""
    table = dataset.with_format("arrow")[:] if dataset._indices is not None else dataset.data.table
    events = pc.list_flatten(table.column("event_ids"))
    counts = pc.value_counts(events)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))


def vocabulary_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    items: Iterable = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(repr(list(items)).encode()).hexdigest()[:16]


def never_masked_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """[CLS], [SEP] and [PAD] frame a session; predicting them teaches nothing about events."""
    return [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
