"""logbert.trainer: end-slot cuts drawn per epoch by the sampler, and batches grouped by the length after the cut."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, Trainer, TrainingArguments

from logbert.resume import SeededCollate
from logbert.collator import (
    NO_END_SLOT,
    EndOfSessionCollator,
    build_collator,
    draw_end_slots,
    draw_window_starts,
    end_slot_lengths,
)
from logbert.config import DataArguments
from logbert.tokenizer import build_token_id_tokenizer
from logbert.trainer import (
    EndSlotDataset,
    EndSlotSampler,
    LogBertTrainer,
    length_grouped_order,
)

BATCH = 32


@pytest.fixture(scope="module")
def tokenizer():
    return build_token_id_tokenizer(300)


def heavy_sessions(count: int, seed: int = 0) -> Dataset:
    """Sessions of log-normal length around 150 tokens (the reference's), events 104..299."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(150), 0.6, count).astype(int), 3, 512)
    input_ids = [[101, *rng.integers(104, 300, length - 2).tolist(), 102] for length in lengths]
    return Dataset.from_dict({"input_ids": input_ids, "length": lengths.tolist()})


# ---- the draw -------------------------------------------------------------------------------------------------------

def test_end_slots_follow_the_documented_shares_and_bounds():
    events = np.random.default_rng(0).integers(0, 200, 200_000)
    end_slots = draw_end_slots(events, 0.5, np.random.default_rng(1))
    has_events = events >= 1
    assert (end_slots[~has_events] == NO_END_SLOT).all()  # nothing to cut, nothing to predict
    chosen = end_slots != NO_END_SLOT
    assert chosen[has_events].mean() == pytest.approx(0.5, abs=0.01)
    whole = chosen & (end_slots == events)
    prefix = chosen & ~whole
    assert whole[has_events & (events >= 2)].mean() == pytest.approx(0.25, abs=0.01)
    assert (end_slots[prefix] >= 1).all() and (end_slots[prefix] <= events[prefix] - 1).all()
    assert (end_slots[chosen & (events == 1)] == 1).all()  # one event: the whole session, the slot predicts [SEP]
    # uniform over the prefixes: for 10-event sessions, each of 1..9 kept events about equally often
    counts = np.bincount(end_slots[prefix & (events == 10)], minlength=10)[1:]
    assert counts.min() > 0.7 * counts.mean()


def test_lengths_after_the_cut():
    lengths = np.array([10, 10, 10, 3])
    end_slots = np.array([NO_END_SLOT, 8, 3, 1])
    assert end_slot_lengths(lengths, end_slots).tolist() == [10, 10, 5, 3]


def test_collator_puts_the_slot_where_the_example_says(tokenizer):
    collator = EndOfSessionCollator(build_collator(tokenizer, DataArguments(mlm_probability=0.0001)), 0.5)
    ids = [101, 104, 105, 106, 107, 102]
    batch = collator([{"input_ids": ids, "end_slot": 2}, {"input_ids": ids, "end_slot": 4},
                      {"input_ids": ids, "end_slot": NO_END_SLOT}])
    mask = tokenizer.mask_token_id
    assert batch["attention_mask"].sum(dim=1).tolist() == [4, 6, 6]
    assert batch["input_ids"][0, :4].tolist() == [101, 104, 105, mask] and batch["labels"][0, 3] == 106
    assert batch["input_ids"][1, :6].tolist() == [101, 104, 105, 106, 107, mask] and batch["labels"][1, 5] == 102
    assert batch["input_ids"][2, :6].tolist() == ids


def test_windows_cut_half_of_the_long_prefixes_to_their_last_events():
    events = np.random.default_rng(0).integers(1, 100, 100_000)
    end_slots = draw_end_slots(events, 0.5, np.random.default_rng(1))
    starts = draw_window_starts(events, end_slots, 10, np.random.default_rng(2))
    long_prefix = (end_slots != NO_END_SLOT) & (end_slots < events) & (end_slots > 10)
    assert (starts[~long_prefix] == 0).all()  # whole sessions and short prefixes keep their start
    windowed = starts > 0
    assert windowed[long_prefix].mean() == pytest.approx(0.5, abs=0.01)
    assert (end_slots[windowed] - starts[windowed] == 10).all()
    assert (draw_window_starts(events, end_slots, 0, np.random.default_rng(2)) == 0).all()
    assert end_slot_lengths(events + 2, end_slots, starts)[windowed].tolist() == [12] * int(windowed.sum())


def test_a_windowed_slot_sits_where_linear_scoring_reads_it(tokenizer):
    from logbert.pipeline import NEXT, LogAnomalyPipeline

    collator = EndOfSessionCollator(build_collator(tokenizer, DataArguments(mlm_probability=0.0001)), 0.5, window=2)
    ids = [101, 104, 105, 106, 107, 108, 102]
    batch = collator([{"input_ids": ids, "end_slot": 4, "window_start": 2}, {"input_ids": ids, "end_slot": 3}])
    mask = tokenizer.mask_token_id
    # events 2 and 3 (106, 107) at positions 3 and 4, the slot at 5 predicting event 4 (108); [CLS] at 0
    assert batch["input_ids"][0, :4].tolist() == [101, 106, 107, mask] and batch["labels"][0, 3] == 108
    assert batch["position_ids"][0, :4].tolist() == [0, 3, 4, 5]
    assert batch["position_ids"][1, :5].tolist() == [0, 1, 2, 3, 4]  # a prefix from the start: positions as usual
    assert batch["position_ids"][0, 4:].tolist() == list(range(4, batch["input_ids"].shape[1]))  # padding unmoved
    # the pipeline's left-to-right row for event 4 with a window of 2 holds the same tokens at the same positions
    scorer = LogAnomalyPipeline.__new__(LogAnomalyPipeline)  # only its row building: no model needed
    scorer.tokenizer, scorer.max_events, scorer.num_replicas = tokenizer, 510, 7
    rows, _ = scorer._build_rows([tuple(ids[1:-1])], "linear", 2)
    tokens, positions, _, _, _, offset = next(row for row in rows if row[2] == NEXT and row[4].tolist() == [4])
    scored = tokens.copy()
    scored[positions] = mask
    assert scored.tolist() == batch["input_ids"][0, :4].tolist() and tokens[positions].tolist() == [108]
    assert [0, *range(1 + offset, len(tokens) + offset)] == batch["position_ids"][0, :4].tolist()


# ---- the sampler ----------------------------------------------------------------------------------------------------

def test_sampler_yields_every_session_once_with_its_planned_slot_and_is_fixed_by_seed_and_epoch():
    lengths = heavy_sessions(2000)["length"]
    sampler = EndSlotSampler(lengths, BATCH, 0.5, seed=7)
    first = list(sampler)
    assert sorted(index for index, _ in first) == list(range(2000))
    order, end_slots, _ = sampler.plan()
    assert first == list(zip(order.tolist(), end_slots[order].tolist()))
    assert list(EndSlotSampler(lengths, BATCH, 0.5, seed=7)) == first  # another process, or a resumed run
    sampler.set_epoch(1)
    assert list(sampler) != first  # new cuts and a new order each epoch
    assert list(EndSlotSampler(lengths, BATCH, 0.5, seed=8)) != first


def test_a_sampler_with_a_window_yields_the_window_start():
    lengths = heavy_sessions(500)["length"]
    planned = list(EndSlotSampler(lengths, BATCH, 0.5, seed=7, window=10))
    assert all(len(item) == 3 for item in planned) and any(start > 0 for _, _, start in planned)
    assert all(end_slot - start == 10 for _, end_slot, start in planned if start)
    assert [item[:2] for item in planned] != list(EndSlotSampler(lengths, BATCH, 0.5, seed=7))  # grouped anew
    dataset = EndSlotDataset(heavy_sessions(4))
    assert dataset[(2, 30, 20)]["window_start"] == 20 and "window_start" not in dataset[(2, 30)]


def test_grouped_order_sorts_each_megabatch_and_puts_the_longest_first():
    lengths = np.random.default_rng(0).integers(3, 512, 10_000)
    order = length_grouped_order(lengths, BATCH, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(10_000))
    assert lengths[order[0]] == lengths.max()
    megabatch = 50 * BATCH
    for start in range(megabatch, 10_000, megabatch):  # the first one had its head swapped
        chunk = lengths[order[start: start + megabatch]]
        assert (np.diff(chunk) <= 0).all()


def batch_padding_efficiency(dataloader) -> float:
    real = slots = 0
    for batch in dataloader:
        real += int(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
    return real / slots


def tiny_trainer(trainer_class, tokenizer, dataset, tmp_path, **arguments):
    model = BertForMaskedLM(BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=512))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=BATCH, use_cpu=True, seed=3,
                             report_to="none", remove_unused_columns=False, **arguments)
    collator = EndOfSessionCollator(build_collator(tokenizer, DataArguments()), 0.5)
    return trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         data_collator=collator)


def test_batches_grouped_after_the_cut_waste_under_a_tenth_on_padding(tokenizer, tmp_path):
    dataset = heavy_sessions(3200)
    grouped = tiny_trainer(LogBertTrainer, tokenizer, dataset, tmp_path, train_sampling_strategy="group_by_length")
    plain = tiny_trainer(Trainer, tokenizer, dataset, tmp_path, train_sampling_strategy="group_by_length")
    efficiency = batch_padding_efficiency(grouped.get_train_dataloader())
    cut_after_grouping = batch_padding_efficiency(plain.get_train_dataloader())
    assert efficiency >= 0.9
    assert cut_after_grouping < 0.9  # what the sampler-level cuts fix
    # and the end slots are all there: half of the rows end in the slot ([SEP] is never masked otherwise)
    ends_in_slot = []
    for batch in grouped.get_train_dataloader():
        last = batch["attention_mask"].sum(dim=1) - 1
        ends_in_slot.append(batch["input_ids"][torch.arange(len(last)), last] == tokenizer.mask_token_id)
    assert torch.cat(ends_in_slot).float().mean() == pytest.approx(0.5, abs=0.04)


def test_worker_processes_collate_the_same_batches(tokenizer, tmp_path):
    """Workers get each session's cut with its index: the same rows, slots and (seeded) masks as in-process."""
    dataset = heavy_sessions(256)
    batches = []
    for workers in (0, 2):
        trainer = tiny_trainer(LogBertTrainer, tokenizer, dataset, tmp_path, dataloader_num_workers=workers)
        loader = trainer.get_train_dataloader()
        base = getattr(loader, "base_dataloader", loader)
        base.collate_fn = SeededCollate(base.collate_fn, seed=3)  # as ReproducibleResumeCallback does
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1]) == 8
    for in_process, in_worker in zip(*batches):
        assert torch.equal(in_process["input_ids"], in_worker["input_ids"])
        assert torch.equal(in_process["labels"], in_worker["labels"])


def test_the_sampler_learns_the_epoch_from_the_trainer_also_when_resuming_mid_epoch(tokenizer, tmp_path):
    trainer = tiny_trainer(LogBertTrainer, tokenizer, heavy_sessions(64), tmp_path)
    trainer.get_train_dataloader()
    trainer.state.epoch = 2.25  # what the Trainer holds at the epoch start of a run resumed a quarter into epoch 2
    trainer.callback_handler.on_epoch_begin(trainer.args, trainer.state, trainer.control)
    assert trainer.end_slot_sampler.epoch == 2


def test_a_whole_session_slot_predicts_sep_even_when_the_data_ends_otherwise(tokenizer):
    collator = EndOfSessionCollator(build_collator(tokenizer, DataArguments(mlm_probability=0.0001)), 0.5)
    batch = collator([{"input_ids": [101, 104, 105, 106], "end_slot": 2}])  # token-id data without a final [SEP]
    assert batch["input_ids"][0, 3] == tokenizer.mask_token_id and batch["labels"][0, 3] == tokenizer.sep_token_id


def test_dataset_reads_pairs_and_plain_indices(tokenizer):
    dataset = EndSlotDataset(heavy_sessions(4))
    assert dataset[(2, 5)]["end_slot"] == 5
    assert dataset[2]["end_slot"] == NO_END_SLOT
    assert dataset[(2, 5)]["input_ids"] == dataset[2]["input_ids"]


def test_plain_trainer_path_without_the_end_slot(tokenizer, tmp_path):
    trainer = tiny_trainer(LogBertTrainer, tokenizer, heavy_sessions(64), tmp_path)
    trainer.data_collator = trainer.data_collator.collator  # end slot off: the Trainer's own dataloader
    assert not isinstance(trainer.get_train_dataloader().dataset, EndSlotDataset)


def test_two_processes_split_one_plan_between_them():
    """Under DDP each rank iterates its own copy of the sampler; accelerate hands every rank other batches."""
    lengths = heavy_sessions(640)["length"]
    shards = []
    for rank in (0, 1):
        batches = torch.utils.data.BatchSampler(EndSlotSampler(lengths, BATCH, 0.5, seed=5), BATCH, drop_last=False)
        shards.append([pair for batch in BatchSamplerShard(batches, num_processes=2, process_index=rank)
                       for pair in batch])
    assert len(shards[0]) == len(shards[1]) == 320
    assert sorted(shards[0] + shards[1]) == sorted(EndSlotSampler(lengths, BATCH, 0.5, seed=5))
