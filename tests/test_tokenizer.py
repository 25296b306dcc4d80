"""logbert.tokenizer: the event-ID vocabulary and the seed's token-id convention as fast tokenizers."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from logbert.data import load_corpus
from logbert.tokenizer import (SPECIAL_TOKENS, build_event_tokenizer, build_token_id_tokenizer, count_events,
                               never_masked_ids, vocabulary_fingerprint)


@pytest.fixture(scope="module")
def sample_counts(sample_sessions) -> Counter:
    return Counter(event for session in sample_sessions for event in session)


def test_event_tokenizer_puts_specials_first_then_events_by_frequency(sample_counts):
    tokenizer = build_event_tokenizer(sample_counts)
    vocab = tokenizer.get_vocab()

    assert [vocab[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id) == (0, 1, 2, 3, 4)
    events = sorted((token for token in vocab if token not in SPECIAL_TOKENS), key=vocab.get)
    assert set(events) == set(sample_counts)
    assert [sample_counts[e] for e in events] == sorted(sample_counts.values(), reverse=True)
    assert sorted(vocab.values()) == list(range(len(vocab))) == list(range(len(tokenizer)))


def test_event_tokenizer_frames_sessions_and_maps_unseen_events_to_unk():
    tokenizer = build_event_tokenizer(Counter({"a": 3, "b": 2, "rare": 1}), min_frequency=2)
    a, b = tokenizer.convert_tokens_to_ids(["a", "b"])

    encoded = tokenizer("a b rare never-seen a")["input_ids"]

    unk = tokenizer.unk_token_id
    assert encoded == [tokenizer.cls_token_id, a, b, unk, unk, a, tokenizer.sep_token_id]
    assert "rare" not in tokenizer.get_vocab()


def test_event_tokenizer_ties_are_ordered_by_event_id():
    first = build_event_tokenizer(Counter({"9": 2, "10": 2, "1": 2}))
    second = build_event_tokenizer(Counter({"1": 2, "10": 2, "9": 2}))
    assert first.get_vocab() == second.get_vocab()


def test_event_named_like_a_special_token_is_an_error():
    with pytest.raises(ValueError, match="collides"):
        build_event_tokenizer(Counter({"[MASK]": 1, "5": 1}))


def test_token_id_tokenizer_keeps_the_seed_convention():
    tokenizer = build_token_id_tokenizer(1000)

    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id) == (0, 100, 101, 102, 103)
    assert len(tokenizer) == 1000
    assert tokenizer.convert_ids_to_tokens([5, 999]) == ["#5", "#999"]
    assert tokenizer("#5 #999")["input_ids"] == [101, 5, 999, 102]


def test_token_id_tokenizer_needs_room_for_the_special_ids():
    with pytest.raises(ValueError, match="vocab_size"):
        build_token_id_tokenizer(100)


@pytest.mark.parametrize("kind", ["events", "token_ids"])
def test_tokenizers_round_trip_through_auto_tokenizer(kind, tmp_path, sample_counts, sample_sessions):
    if kind == "events":
        tokenizer = build_event_tokenizer(sample_counts)
        texts = [" ".join(session) for session in sample_sessions[:50]] + ["5 unseen-event 22"]
    else:
        tokenizer = build_token_id_tokenizer(2000)
        texts = [" ".join(f"#{int(e) + 200}" for e in session) for session in sample_sessions[:50]]
    tokenizer.save_pretrained(tmp_path)

    reloaded = AutoTokenizer.from_pretrained(tmp_path)

    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    for name in ("pad_token_id", "unk_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        assert getattr(reloaded, name) == getattr(tokenizer, name), name
    assert never_masked_ids(reloaded) == never_masked_ids(tokenizer)
    assert vocabulary_fingerprint(reloaded) == vocabulary_fingerprint(tokenizer)
    padded = reloaded.pad([{"input_ids": [reloaded.cls_token_id, reloaded.sep_token_id]}], pad_to_multiple_of=8)
    assert padded["input_ids"][0][2:] == [tokenizer.pad_token_id] * 6


def test_vocabulary_fingerprint_follows_the_vocabulary():
    base = build_event_tokenizer(Counter({"a": 2, "b": 1}))
    assert vocabulary_fingerprint(base) == vocabulary_fingerprint(build_event_tokenizer(Counter({"a": 5, "b": 1})))
    assert vocabulary_fingerprint(base) != vocabulary_fingerprint(build_event_tokenizer(Counter({"a": 1, "b": 2})))


def test_never_masked_ids_are_the_frame_tokens():
    tokenizer = build_token_id_tokenizer(1000)
    assert sorted(never_masked_ids(tokenizer)) == [0, 101, 102]


def python_counts(dataset) -> Counter:
    return Counter(event for events in dataset["event_ids"] for event in events)


def test_count_events_on_a_plain_dataset(sample_sessions, sample_counts):
    dataset = Dataset.from_dict({"event_ids": sample_sessions})
    assert count_events(dataset) == sample_counts


@pytest.mark.parametrize("view", ["train_test_split", "select_scattered", "select_contiguous", "shuffle", "empty"])
def test_count_events_respects_an_indices_mapping(view, sample_sessions):
    dataset = Dataset.from_dict({"event_ids": sample_sessions[:400], "length": [len(s) for s in sample_sessions[:400]]})
    if view == "train_test_split":
        subset = dataset.train_test_split(test_size=0.1, seed=0)["test"]
    elif view == "select_scattered":
        subset = dataset.select(range(0, 400, 7))
    elif view == "select_contiguous":
        subset = dataset.select(range(350, 400))
    elif view == "shuffle":
        subset = dataset.shuffle(seed=0).select(range(30))
    else:
        subset = dataset.select([])

    counts = count_events(subset)

    assert counts == python_counts(subset)
    assert sum(counts.values()) == sum(len(e) for e in subset["event_ids"])


def test_count_events_on_a_loaded_corpus_split(sample_file, data_args):
    corpus = load_corpus(data_args(sample_file, validation_split_percentage=20), 10000, seed=3)
    assert count_events(corpus.train) == python_counts(corpus.train)
    assert count_events(corpus.validation) == python_counts(corpus.validation)


def test_count_events_after_duplicates_are_dropped(write_json, data_args):
    first = write_json("a.json", [{"session_id": f"s{i}", "event_sequence": [str(i % 7), "x"]} for i in range(20)])
    second = write_json("b.json", [{"session_id": f"s{i}", "event_sequence": [str(i % 5), "y"]} for i in range(10, 40)])

    corpus = load_corpus(data_args(first, second, skip_bad_records=True, validation_split_percentage=10), 10000, 0)

    assert len(corpus.rejected) == 10
    assert count_events(corpus.train) == python_counts(corpus.train)
