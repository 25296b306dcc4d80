"""The argument dataclasses of a training run: model, data, reference aliases, training, scoring.

Each field is the single source of truth for a flag and a `--config` key: its type, default and help. Parsing
them from YAML and the command line is `logbert.config`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from .scoring import SCORE_NAMES


@dataclass
class ModelArguments:
    """The BERT encoder. Defaults are a small model that trains on a laptop CPU in minutes."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A trained LogBERT directory to continue from. Default: a new model built from this config."},
    )
    vocab_size: int = field(
        default=10000,
        metadata={
            "help": "Token-id space for data that carries `token_ids` (the seed convention PAD=0, UNK=100, CLS=101, "
            "SEP=102, MASK=103). Event-ID data builds its own vocabulary and ignores this."
        },
    )
    hidden_size: int = field(default=128, metadata={"help": "Width of the encoder."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads per layer."})
    intermediate_size: int | None = field(
        default=None, metadata={"help": "Feed-forward width. Default: 4 * --hidden_size, as in BERT."}
    )
    max_position_embeddings: int = field(default=512, metadata={"help": "Longest session (in tokens) the model sees."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on hidden states."})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on attention weights."})
    initializer_range: float = field(default=0.02, metadata={"help": "Std of the weight initialisation."})
    pad_vocab_to_multiple_of: int = field(
        default=64,
        metadata={"help": "Round the embedding rows up to this multiple: tensor cores prefer aligned matmuls."},
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel.", "choices": ["sdpa", "eager"]}
    )
    sparse_mlm_head: bool = field(
        default=True,
        metadata={
            "help": "Apply the MLM decoder only at masked positions during training: the other ~85% of positions "
            "carry no loss, so decoding them is wasted work."
        },
    )

    def __post_init__(self):
        if self.intermediate_size is None:  # BERT's ratio: a 768-wide config without it is BERT-base (~110M)
            self.intermediate_size = 4 * self.hidden_size
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"--hidden_size ({self.hidden_size}) must be divisible by --num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.pad_vocab_to_multiple_of < 1:
            raise ValueError("--pad_vocab_to_multiple_of must be at least 1.")


@dataclass
class DataArguments:
    """Where the log sessions come from and how they become model inputs."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Directory of session files (matched by --file_pattern). Default: the bundled HDFS sample."},
    )
    train_file: list[str] | None = field(
        default=None, metadata={"help": "Training files or globs (JSON, JSON Lines or event-ID text)."}
    )
    validation_file: list[str] | None = field(
        default=None, metadata={"help": "Validation files or globs. Default: held out from the training files."}
    )
    file_pattern: list[str] = field(
        default_factory=lambda: ["*.json", "*.jsonl", "*.txt"],
        metadata={"help": "Globs matched inside --data-dir."},
    )
    validation_split: str = field(
        default="random",
        metadata={
            "help": "How to hold out validation sessions when no --validation_file is given: 'random' (a "
            "deterministic, seeded percentage) or 'chronological' (the last files, by name, so that time-ordered "
            "logs do not leak the future into training).",
            "choices": ["random", "chronological"],
        },
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percentage of sessions (or of files, chronologically) held out."}
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per session including [CLS]/[SEP]. Default: --max_position_embeddings."},
    )
    truncate_long_sessions: bool = field(
        default=True,
        metadata={"help": "Cut sessions longer than --max_seq_length (counted in the log); otherwise it is an error."},
    )
    skip_bad_records: bool = field(
        default=False,
        metadata={"help": "Write malformed sessions to OUTPUT_DIR/rejected_records.jsonl with the reason, not fail."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of event tokens masked per session."})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "Of the masked tokens, share replaced by [MASK]."})
    random_replace_prob: float = field(
        default=0.1, metadata={"help": "Of the masked tokens, share replaced by a random event (the rest is kept)."}
    )
    end_of_session_probability: float = field(
        default=0.5,
        metadata={"help": "Share of training sessions whose end is a masked slot to predict ([SEP] or the next event); "
                  "teaches the model where sessions end, which per-event masking cannot. 0 turns it off."},
    )
    end_slot_window: int = field(
        default=0,
        metadata={"help": "With N > 0, half of the end slots after a prefix see only its last N events, in place, as "
                  "linear scoring reads them (set it to --next_event_window). 0: every prefix from the start."},
    )
    pad_to_multiple_of: int = field(default=8, metadata={"help": "Dynamic padding length multiple."})
    min_event_frequency: int = field(
        default=1, metadata={"help": "Events seen fewer times in training map to [UNK] in the vocabulary."}
    )
    data_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where the Arrow cache lives. Default: $LOGBERT_CACHE or ~/.cache/logbert."},
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Rebuild the Arrow cache even when it is valid."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that parse session files in parallel (default: 1)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training sessions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many validation sessions."})

    def __post_init__(self):
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError("--validation_split_percentage must be in [0, 100).")
        if not 0 < self.mlm_probability < 1:
            raise ValueError("--mlm_probability (--mask_prob) must be in (0, 1).")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("--mask_replace_prob + --random_replace_prob must not exceed 1.")
        if self.end_slot_window < 0:
            raise ValueError("--end_slot_window must be 0 (off) or a number of events.")

    def cache_root(self) -> Path:
        return Path(self.data_cache_dir or os.environ.get("LOGBERT_CACHE") or Path.home() / ".cache" / "logbert")


@dataclass
class ReferenceArguments:
    """The reference `training_config.yaml` keys, accepted unchanged and mapped onto Hugging Face arguments."""

    batch_size: int | None = field(
        default=None, metadata={"help": "Per-device batch size (train and eval): --per_device_train_batch_size."}
    )
    num_epochs: float | None = field(default=None, metadata={"help": "Alias of --num_train_epochs."})
    mask_prob: float | None = field(default=None, metadata={"help": "Alias of --mlm_probability."})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "'no', 'fp16', 'bf16' or 'auto' (bf16 where the GPU supports it, else fp16; fp32 on CPU).",
            "choices": ["no", "fp16", "bf16", "auto"],
        },
    )
    num_workers: int | None = field(default=None, metadata={"help": "Alias of --dataloader_num_workers."})
    use_multi_gpu: bool = field(
        default=False,
        metadata={"help": "Informational: the number of GPUs comes from `accelerate launch`, see the README."},
    )


@dataclass
class LogBertTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the LogBERT reference recipe as defaults (AdamW, cosine, wd 0.01, clip 1.0)."""

    output_dir: str = field(default="outputs/logbert", metadata={"help": "Where checkpoints and models go."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sessions per device per step."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sessions per device in evaluation."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training sessions."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    warmup_steps: float = field(
        default=0.0, metadata={"help": "Warmup: steps, or a fraction of all steps when below 1."}
    )
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."})
    eval_steps: float | None = field(default=200, metadata={"help": "Evaluate every N steps."})
    save_steps: float = field(default=200, metadata={"help": "Write checkpoint-N every N steps."})
    save_total_limit: int | None = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    logging_steps: float = field(default=50, metadata={"help": "Log the loss every N steps."})
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "'group_by_length' batches sessions of similar length, so little compute goes to padding."},
    )
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "Experiment trackers, as in transformers (default: none). `--report_to tensorboard` "
                  "writes OUTPUT_DIR/runs/ (pip install tensorboard)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "The datasets we build hold only model inputs already."}
    )
    do_train: bool = field(default=True, metadata={"help": "Train (pass --do_train false to only evaluate)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an --output_dir that holds another run: its checkpoints, models and "
                  "known-normal fingerprints are removed first. Without it such a folder is refused."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Resume from this checkpoint-N folder; with no path, from the latest complete one in --output_dir.",
            "nargs": "?",
            "const": "latest",
        },
    )
    top_k: list[int] = field(
        default_factory=lambda: [5, 10],
        metadata={"help": "k values for the top-k masked-event accuracy reported at evaluation."},
    )
    nan_loss_patience: int = field(
        default=20,
        metadata={"help": "Stop with an error when the logged loss is NaN/inf this many logging steps in a row."},
    )


@dataclass
class ScoringArguments:
    """How the trained model turns sessions into verdicts: the session score, LogBERT's top-g, the threshold."""

    threshold_target_fpr: float = field(
        default=0.001,
        metadata={"help": "After training, the anomaly threshold is set so that this share of held-out normal "
                  "(validation) sessions is flagged. No labels are used."},
    )
    num_candidates: int = field(
        default=5, metadata={"help": "LogBERT's top-g: an event outside the model's top g predictions is a miss."}
    )
    score_name: str = field(
        default="next_max_nll",
        metadata={"help": "Session score used for is_anomaly (see logbert/scoring.py). The default reads the end "
                  "slot; without it (end_of_session_probability 0) max_nll is used.",
                  "choices": list(SCORE_NAMES)},
    )
    known_normal_gate: bool = field(
        default=True,
        metadata={"help": "Save the event multisets of the training sessions with the model; the pipeline then "
                  "scores a session with a known multiset 0 (normal by the training data's word)."},
    )
    calibration_max_sessions: int = field(
        default=20000, metadata={"help": "Validation sessions scored for the threshold (the first N)."}
    )
    scoring_mode: str = field(
        default="linear",
        metadata={"help": "'linear': every event masked once among round(1/mlm_probability) rows per window and "
                  "predicted left to right from at most --next_event_window events, O(L) tokens per session. "
                  "'exhaustive': one row per event and per prefix, O(L^2).", "choices": ["linear", "exhaustive"]},
    )
    next_event_window: int = field(
        default=10, metadata={"help": "Events before event i that its left-to-right score reads (DeepLog uses 10)."}
    )

    def __post_init__(self):
        if not 0 < self.threshold_target_fpr < 1:
            raise ValueError("--threshold_target_fpr must be in (0, 1).")
        if self.num_candidates < 1:
            raise ValueError("--num_candidates must be at least 1.")
        if self.next_event_window < 1:
            raise ValueError("--next_event_window must be at least 1.")


ALL_ARGUMENT_CLASSES = (ModelArguments, DataArguments, ReferenceArguments, LogBertTrainingArguments, ScoringArguments)
