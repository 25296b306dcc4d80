"""The model: built from config with nothing downloaded, a sparse MLM head equal to the dense one."""

import pytest
import torch

from logbert.config import ModelArguments
from logbert.model import LogBertForMaskedLM, build_model, padded_vocab_size
from logbert.tokenizer import build_event_tokenizer, build_token_id_tokenizer
from collections import Counter


@pytest.fixture
def tokenizer():
    return build_event_tokenizer(Counter({str(e): 100 - e for e in range(1, 30)}))


def tiny_arguments(**overrides):
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings.update(overrides)
    return ModelArguments(**settings)


def test_vocabulary_rows_are_padded_to_a_multiple_of_64(tokenizer):
    model = build_model(tiny_arguments(), tokenizer, "events")
    assert model.config.vocab_size == 64 and model.config.tokenizer_vocab_size == len(tokenizer) == 34
    assert padded_vocab_size(10000, 64) == 10048
    assert build_model(tiny_arguments(), build_token_id_tokenizer(10000), "token_ids").config.vocab_size == 10048


def test_model_uses_sdpa_attention(tokenizer):
    assert build_model(tiny_arguments(), tokenizer, "events").config._attn_implementation == "sdpa"


def test_sparse_head_gives_the_dense_loss_and_gradients(tokenizer):
    torch.manual_seed(0)
    sparse = build_model(tiny_arguments(), tokenizer, "events")
    dense = build_model(tiny_arguments(sparse_mlm_head=False), tokenizer, "events")
    dense.load_state_dict(sparse.state_dict())
    input_ids = torch.randint(5, len(tokenizer), (4, 12))
    labels = torch.full_like(input_ids, -100)
    labels[:, [2, 5, 7]] = input_ids[:, [2, 5, 7]]
    sparse_out = sparse(input_ids=input_ids, labels=labels)
    dense_out = dense(input_ids=input_ids, labels=labels)
    assert sparse_out.logits.shape == (12, 64)  # only the masked rows are decoded
    assert dense_out.logits.shape == (4, 12, 64)
    assert torch.allclose(sparse_out.loss, dense_out.loss, atol=1e-6)
    sparse_out.loss.backward()
    dense_out.loss.backward()
    for (name, a), (_, b) in zip(sparse.named_parameters(), dense.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_loss_is_normalised_by_the_number_of_masked_events_across_accumulation(tokenizer):
    model = build_model(tiny_arguments(), tokenizer, "events")
    input_ids = torch.randint(5, len(tokenizer), (2, 10))
    labels = torch.full_like(input_ids, -100)
    labels[0, 1] = input_ids[0, 1]
    labels[1, [2, 3, 4]] = input_ids[1, [2, 3, 4]]
    mean_loss = model(input_ids=input_ids, labels=labels).loss
    # Two micro-batches of 1 and 3 masked events, each divided by the total of 4: they add up to the mean.
    first = model(input_ids=input_ids[:1], labels=labels[:1], num_items_in_batch=4).loss
    second = model(input_ids=input_ids[1:], labels=labels[1:], num_items_in_batch=4).loss
    assert torch.allclose(first + second, mean_loss, atol=1e-6)


def test_without_labels_the_outputs_are_bert_for_masked_lm(tokenizer):
    model = build_model(tiny_arguments(), tokenizer, "events").eval()
    input_ids = torch.randint(5, len(tokenizer), (2, 10))
    plain = super(LogBertForMaskedLM, model).forward(input_ids=input_ids).logits
    assert torch.equal(model(input_ids=input_ids).logits, plain)


def test_hidden_size_must_divide_into_heads():
    with pytest.raises(ValueError, match="--hidden_size"):
        ModelArguments(hidden_size=30, num_attention_heads=4)
