"""`BertForMaskedLM` built from the YAML model section; nothing is downloaded."""

from __future__ import annotations

import logging

import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import MaskedLMOutput

from .config import ModelArguments

logger = logging.getLogger(__name__)


class LogBertForMaskedLM(BertForMaskedLM):
    """BertForMaskedLM whose training loss decodes only the masked positions.

    The weights, config and outputs without labels are BertForMaskedLM's: a saved model loads with
    `AutoModelForMaskedLM` (model_type "bert"). With labels, `logits` holds only the masked rows, (N, V) in
    row-major order of `labels != -100`, because decoding the other ~85% of positions is wasted work.
    The loss is summed and divided by `num_items_in_batch` when the Trainer passes it, so gradient
    accumulation and several processes weight every masked event equally.
    """

    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "tie_word_embeddings", True):
            # The decoder shares the embedding matrix, so checkpoints do not store it; saying so lets the Trainer
            # re-tie it on resume instead of warning about "missing keys" every time.
            self._keys_to_ignore_on_save = ["cls.predictions.decoder.weight", "cls.predictions.decoder.bias"]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None or not getattr(self.config, "sparse_mlm_head", True):
            outputs = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids, position_ids=position_ids,
                                      inputs_embeds=inputs_embeds, labels=None, **kwargs)
            if labels is None:
                return outputs
            logits = outputs.logits
        else:
            hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True,
                               **kwargs).last_hidden_state  # (B, T, H)
            masked = labels != -100
            logits = self.cls(hidden[masked])  # (N, V)
            labels = labels[masked]
        reduction = "sum" if num_items_in_batch is not None else "mean"
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=-100, reduction=reduction)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
        return MaskedLMOutput(loss=loss, logits=logits)


def padded_vocab_size(tokenizer_size: int, multiple: int) -> int:
    return -(-tokenizer_size // multiple) * multiple


def build_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerFast, input_kind: str) -> LogBertForMaskedLM:
    """A freshly initialised LogBERT (or the one in `model_name_or_path`), sized to the tokenizer.

    `vocab_size` comes from the tokenizer, rounded up to `pad_vocab_to_multiple_of` (the extra rows are never
    a label and are cut off when scoring).
    """
    if model_args.model_name_or_path:
        model = LogBertForMaskedLM.from_pretrained(model_args.model_name_or_path,
                                                   attn_implementation=model_args.attn_implementation)
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"{model_args.model_name_or_path} has {model.config.vocab_size} embedding rows, fewer "
                             f"than the tokenizer's {len(tokenizer)} tokens")
        return model
    config = BertConfig(
        vocab_size=padded_vocab_size(len(tokenizer), model_args.pad_vocab_to_multiple_of),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        max_position_embeddings=model_args.max_position_embeddings,
        hidden_dropout_prob=model_args.hidden_dropout_prob,
        attention_probs_dropout_prob=model_args.attention_probs_dropout_prob,
        initializer_range=model_args.initializer_range,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        # Kept in config.json so the scorer knows how to read sessions and which rows are real tokens.
        tokenizer_vocab_size=len(tokenizer),
        input_kind=input_kind,
        sparse_mlm_head=model_args.sparse_mlm_head,
    )
    config._attn_implementation = model_args.attn_implementation
    model = LogBertForMaskedLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    padded = f" (embedding rows padded to {config.vocab_size} for speed)" if config.vocab_size > len(tokenizer) else ""
    logger.info("Built BertForMaskedLM: %d layers x %d hidden, %d tokens%s, %.1fM parameters, %s attention",
                config.num_hidden_layers, config.hidden_size, len(tokenizer), padded, parameters / 1e6,
                model_args.attn_implementation)
    return model

