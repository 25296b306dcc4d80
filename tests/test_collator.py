"""logbert.collator: MLM masking of sessions (15% of events, 80/10/10), padding, and fixed evaluation masks.

The masking tests are statistical: about 100,000 event tokens from the bundled sample, with bounds several
standard deviations wide (the proportions' standard errors are about 0.001 and 0.003), so they neither flake
nor pass when a rate is really off.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling

from logbert.collator import LogSessionCollator, build_collator, mask_for_evaluation
from logbert.config import DataArguments
from logbert.tokenizer import build_event_tokenizer, build_token_id_tokenizer, never_masked_ids

BATCH = 512


@pytest.fixture(scope="module")
def event_tokenizer(sample_sessions):
    return build_event_tokenizer(Counter(event for session in sample_sessions for event in session))


@pytest.fixture(scope="module")
def encoded_sessions(sample_sessions, event_tokenizer) -> list[list[int]]:
    return event_tokenizer([" ".join(s) for s in sample_sessions])["input_ids"]


def masking_args(**overrides) -> DataArguments:
    return DataArguments(max_seq_length=512, **overrides)


def collate_all(collator, sessions: list[list[int]]):
    """Collate every session (in batches, with the `length` column the Trainer passes); return flat tensors."""
    originals, inputs, labels, attention = [], [], [], []
    for start in range(0, len(sessions), BATCH):
        chunk = sessions[start: start + BATCH]
        batch = collator([{"input_ids": ids, "length": len(ids)} for ids in chunk])
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        padded = torch.full_like(batch["input_ids"], collator.tokenizer.pad_token_id)
        for row, ids in enumerate(chunk):
            padded[row, : len(ids)] = torch.tensor(ids)
        originals.append(padded.flatten())
        inputs.append(batch["input_ids"].flatten())
        labels.append(batch["labels"].flatten())
        attention.append(batch["attention_mask"].flatten())
    return torch.cat(originals), torch.cat(inputs), torch.cat(labels), torch.cat(attention)


@pytest.fixture(scope="module")
def collated(event_tokenizer, encoded_sessions):
    collator = build_collator(event_tokenizer, masking_args(), seed=1234)
    return collate_all(collator, encoded_sessions)


def test_about_15_percent_of_event_tokens_are_masked(collated, event_tokenizer):
    original, _, labels, _ = collated
    events = ~torch.isin(original, torch.tensor(never_masked_ids(event_tokenizer)))
    assert events.sum() > 50_000

    masked = labels != -100
    rate = (masked & events).sum().item() / events.sum().item()
    assert 0.14 < rate < 0.16


def test_masked_tokens_are_80_percent_mask_10_random_10_unchanged(collated, event_tokenizer):
    original, inputs, labels, _ = collated
    masked = labels != -100
    total = masked.sum().item()

    to_mask = (inputs[masked] == event_tokenizer.mask_token_id).float().mean().item()
    unchanged = (inputs[masked] == original[masked]).float().mean().item()
    random = 1 - to_mask - unchanged
    # A random draw lands on [MASK] or on the original event about 1 time in len(vocab): allowed for.
    slack = 0.1 / (len(event_tokenizer) - 3)
    assert total > 10_000
    assert 0.78 < to_mask < 0.82 + slack
    assert 0.08 < unchanged < 0.12 + slack
    assert 0.08 - 2 * slack < random < 0.12


def test_labels_are_the_original_events_at_masked_positions_only(collated):
    original, inputs, labels, _ = collated
    masked = labels != -100
    assert torch.equal(labels[masked], original[masked])
    assert torch.equal(inputs[~masked], original[~masked])


def test_frame_tokens_are_never_masked_nor_drawn_as_random_events(collated, event_tokenizer):
    original, inputs, labels, _ = collated
    frame = torch.tensor(never_masked_ids(event_tokenizer))

    assert not (labels[torch.isin(original, frame)] != -100).any()
    # The random 10% replace an event by an event: never by [CLS], [SEP] or [PAD].
    assert not torch.isin(inputs[labels != -100], frame).any()
    random = (labels != -100) & (inputs != original) & (inputs != event_tokenizer.mask_token_id)
    assert random.sum() > 1000
    assert len(inputs[random].unique()) > len(event_tokenizer) // 2  # drawn across the vocabulary


def test_padding_is_dynamic_to_a_multiple_of_8(event_tokenizer, encoded_sessions):
    collator = build_collator(event_tokenizer, masking_args(), seed=0)
    sessions = [encoded_sessions[0][:3], encoded_sessions[1][:5], encoded_sessions[2][:11]]

    batch = collator([{"input_ids": ids, "length": len(ids)} for ids in sessions])

    assert batch["input_ids"].shape == (3, 16)
    lengths = torch.tensor([len(s) for s in sessions])
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    for row, length in enumerate(lengths):
        assert (batch["input_ids"][row, length:] == event_tokenizer.pad_token_id).all()
        assert (batch["labels"][row, length:] == -100).all()
        assert (batch["attention_mask"][row, :length] == 1).all()

    exact = collator([{"input_ids": encoded_sessions[3][:8]}])
    assert exact["input_ids"].shape == (1, 8)


def test_token_id_convention_masks_with_103_and_keeps_101_102_0(sample_sessions):
    tokenizer = build_token_id_tokenizer(1000)
    sessions = [[101, *(int(e) + 200 for e in s), 102] for s in sample_sessions[:2000]]
    collator = build_collator(tokenizer, masking_args(), seed=7)

    original, inputs, labels, _ = collate_all(collator, sessions)

    masked = labels != -100
    assert not torch.isin(original[masked], torch.tensor([0, 101, 102])).any()
    assert not torch.isin(inputs[masked], torch.tensor([0, 101, 102])).any()
    assert 0.75 < (inputs[masked] == 103).float().mean().item() < 0.85
    events = ~torch.isin(original, torch.tensor([0, 101, 102]))
    assert 0.13 < masked.sum().item() / events.sum().item() < 0.17


def test_seeded_collators_mask_alike_and_other_seeds_differently(event_tokenizer, encoded_sessions):
    examples = [{"input_ids": ids, "length": len(ids)} for ids in encoded_sessions[:256]]
    first, second, other = (build_collator(event_tokenizer, masking_args(), seed=s)(examples) for s in (5, 5, 6))
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    assert not torch.equal(first["labels"], other["labels"])


def test_premasked_examples_are_only_padded(event_tokenizer):
    collator = build_collator(event_tokenizer, masking_args(), seed=0)
    mask = event_tokenizer.mask_token_id
    examples = [
        {"input_ids": [2, 5, mask, 6, 3], "labels": [-100, -100, 7, -100, -100], "length": 5},
        {"input_ids": [2, 8, 3], "labels": [-100, -100, -100], "length": 3},
    ]

    batch = collator(examples)

    assert batch["input_ids"].tolist() == [[2, 5, mask, 6, 3, 0, 0, 0], [2, 8, 3, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, -100, -100] + [-100] * 3, [-100] * 8]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 3 + [0] * 5]


def evaluation_dataset(sessions: list[list[int]]) -> Dataset:
    return Dataset.from_dict({"input_ids": sessions, "length": [len(s) for s in sessions]})


def test_mask_for_evaluation_is_deterministic_for_a_seed(event_tokenizer, encoded_sessions):
    dataset = evaluation_dataset(encoded_sessions[:1000])
    args = masking_args()

    first, again, other = (mask_for_evaluation(dataset, event_tokenizer, args, seed) for seed in (11, 11, 12))

    assert sorted(first.column_names) == ["input_ids", "labels", "length"]
    assert first["input_ids"] == again["input_ids"] and first["labels"] == again["labels"]
    assert first["labels"] != other["labels"]
    assert list(first["length"]) == [len(s) for s in encoded_sessions[:1000]]

    labels = torch.tensor([t for row in first["labels"] for t in row])
    original = torch.tensor([t for row in encoded_sessions[:1000] for t in row])
    masked = labels != -100
    events = ~torch.isin(original, torch.tensor(never_masked_ids(event_tokenizer)))
    assert torch.equal(labels[masked], original[masked])
    assert not (masked & ~events).any()
    assert 0.12 < masked.sum().item() / events.sum().item() < 0.18


def test_mask_for_evaluation_batches_pad_without_remasking(event_tokenizer, encoded_sessions):
    masked = mask_for_evaluation(evaluation_dataset(encoded_sessions[:4]), event_tokenizer, masking_args(), 0)
    collator = build_collator(event_tokenizer, masking_args())

    batch = collator([masked[i] for i in range(4)])

    for row in range(4):
        n = len(masked[row]["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == masked[row]["input_ids"]
        assert batch["labels"][row, :n].tolist() == masked[row]["labels"]
    assert batch["input_ids"].shape[1] % 8 == 0


def test_mask_for_evaluation_does_not_reuse_a_cache_made_with_other_settings(tmp_path, event_tokenizer,
                                                                              encoded_sessions):
    # A file-backed dataset, as the corpus is: datasets caches map() results next to it, by fingerprint.
    evaluation_dataset(encoded_sessions[:500]).save_to_disk(tmp_path / "eval")
    dataset = Dataset.load_from_disk(tmp_path / "eval")
    assert dataset.cache_files

    mask_for_evaluation(dataset, event_tokenizer, masking_args(), seed=0)
    only_mask = mask_for_evaluation(dataset, event_tokenizer,
                                    masking_args(mask_replace_prob=1.0, random_replace_prob=0.0), seed=0)

    inputs = [t for row in only_mask["input_ids"] for t in row]
    labels = [t for row in only_mask["labels"] for t in row]
    at_masked = [i for i, label in zip(inputs, labels) if label != -100]
    assert len(at_masked) > 500
    assert set(at_masked) == {event_tokenizer.mask_token_id}


def test_collator_masks_the_same_positions_as_the_hugging_face_one(event_tokenizer, encoded_sessions):
    """Only the frame-token lookup and the random replacement differ: which positions are masked is HF's draw."""
    examples = [{"input_ids": ids} for ids in encoded_sessions[:64]]
    ours = LogSessionCollator(tokenizer=event_tokenizer, mlm_probability=0.15, pad_to_multiple_of=8)
    stock = DataCollatorForLanguageModeling(tokenizer=event_tokenizer, mlm_probability=0.15, pad_to_multiple_of=8)
    torch.manual_seed(11)
    our_batch = ours(examples)
    torch.manual_seed(11)
    stock_batch = stock(examples)
    assert torch.equal(our_batch["labels"] != -100, stock_batch["labels"] != -100)
    assert torch.equal(our_batch["labels"], stock_batch["labels"])
    assert (our_batch["labels"] != -100).sum() > 50
