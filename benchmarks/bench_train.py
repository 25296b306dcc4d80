#!/usr/bin/env python
"""Training throughput: the reference's naive setup against the project's default, same model, one run.

    PYTHONPATH=. python benchmarks/bench_train.py --steps 12                      # CPU: the small default model
    PYTHONPATH=. python benchmarks/bench_train.py --workload hdfs-text --threads 1  # event-ID text, 19 tokens
    PYTHONPATH=. python benchmarks/bench_train.py --config configs/logbert-base.yaml --device cuda \\
        --steps 50 --peak-tflops 989                                              # one H100, BERT-base

Both setups build what users run (`parse_args` -> `build_model` -> `build_training_collator` -> `Trainer`)
on the same sessions; they differ only in the settings that the issue names:
  naive   -- every batch padded to max_seq_length, random batches, dense MLM head (logits at every position),
             no end-of-session slot, fp32 (fp16 on a GPU): the reference setup.
  default -- the project's defaults: length-grouped batches, dynamic padding to a multiple of 8, the sparse MLM
             head, the end-of-session slot, bf16 on a GPU that supports it.
Setups with length-grouped batches are timed over one whole megabatch (50 batches: the sampler sorts each one
longest first, so fewer steps would see only long sessions); the others over --steps. Real tokens are the
attention-mask ones the model saw; token slots are everything it computed, padding included. Model FLOPs count the
useful work on real tokens only: 6 x (matmul parameters: encoder, MLM transform and decoder) per token plus 12 x
layers x hidden x length per token for attention, so MFU is comparable across setups. They count the decoder at
every real token, as BERT's FLOPs are usually counted, although the sparse head runs it only at the ~15% masked
positions; executed FLOPs (and HFU) count what the hardware ran: padding, full padded attention, and the head where
it was applied. Sessions come from --data-dir (a generate_corpus.py corpus) or are drawn in memory the same way.

Two workloads: `token-ids` (the reference's: token ids of a 10,000-id vocabulary, batch 32) and `hdfs-text` (event-ID
text as HDFS has it: the 14 events of hdfs_train in a 19-token vocabulary built by `build_event_tokenizer`, batch
16). Both draw the same reference-like lengths by default. With a 19-token vocabulary the decoder (64 rows) is 2% of
the matmul weights, so the sparse head buys little there and the ratio is padding and attention (benchmarks/README.md).
--profile N runs each setup again under torch.profiler for N steps and prints its top operators.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import torch
import transformers
from datasets import Dataset
from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from benchmarks.generate_corpus import (
    BUNDLED_HDFS_FILE,
    CLS_ID,
    HDFS_DIR,
    SEP_ID,
    SessionSampler,
    load_hdfs_sessions,
)
from logbert.collator import build_training_collator
from logbert.config import DataArguments, parse_args
from logbert.data import EVENTS_KIND, TOKEN_IDS_KIND, load_corpus, model_inputs
from logbert.model import build_model
from logbert.tokenizer import build_event_tokenizer, build_token_id_tokenizer
from logbert.trainer import LogBertTrainer

SETUPS = {
    "naive": {"train_sampling_strategy": "random", "sparse_mlm_head": "false", "end_of_session_probability": "0"},
    "default": {},
}
ABLATIONS = {  # one default setting changed back at a time: what each is worth
    "default_random_batches": {"train_sampling_strategy": "random"},
    "default_dense_head": {"sparse_mlm_head": "false"},
    "default_no_end_of_session": {"end_of_session_probability": "0"},
}
# transformers' LengthGroupedSampler sorts megabatches of up to 50 batches longest first: timing fewer steps than
# a megabatch would time the longest sessions only. Grouped setups are timed over one whole megabatch.
MEGABATCH_BATCHES = 50


class ThroughputMeter(TrainerCallback):
    """Counts what the model computed each step (a forward pre-hook) and the time between step ends."""

    def __init__(self, model: torch.nn.Module, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.steps: list[dict] = []
        self._pending = {"real": 0, "slots": 0, "squares": 0, "sessions": 0, "masked": 0, "padded_squares": 0}
        self._last_end = self._last_cpu = None
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if not module.training:
            return
        mask = kwargs["attention_mask"]  # (B, T)
        lengths = mask.sum(dim=1)
        self._pending["real"] += lengths.sum()
        self._pending["squares"] += (lengths.double() ** 2).sum()
        self._pending["slots"] += mask.numel()
        self._pending["sessions"] += mask.shape[0]
        self._pending["padded_squares"] += mask.shape[0] * mask.shape[1] ** 2
        self._pending["masked"] += (kwargs["labels"] != -100).sum()

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_end, self._last_cpu = self._now(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        now, cpu = self._now(), time.process_time()
        step = {name: float(value) for name, value in self._pending.items()}
        step["seconds"], step["cpu_seconds"] = now - self._last_end, cpu - self._last_cpu
        self.steps.append(step)
        self._pending = {name: 0 for name in self._pending}
        self._last_end, self._last_cpu = now, cpu

    def timed_steps(self) -> list[dict]:
        return self.steps[self.warmup_steps:]


def matmul_parameters(config) -> tuple[int, int]:
    """(encoder, MLM head) weights that multiply activations: Q, K, V, O and the FFN; the transform and decoder."""
    hidden, inner = config.hidden_size, config.intermediate_size
    return (config.num_hidden_layers * (4 * hidden * hidden + 2 * hidden * inner),
            hidden * hidden + hidden * config.vocab_size)


def model_flops(config, step: dict) -> float:
    """Model FLOPs (forward + backward) of the useful work: real tokens only, the head counted at every one."""
    encoder, head = matmul_parameters(config)
    attention = 12 * config.num_hidden_layers * config.hidden_size
    return 6 * (encoder + head) * step["real"] + attention * step["squares"]


def executed_flops(config, step: dict) -> float:
    """FLOPs the hardware ran: every padded slot, full padded attention, the head where it was applied."""
    encoder, head = matmul_parameters(config)
    attention = 12 * config.num_hidden_layers * config.hidden_size
    head_rows = step["masked"] if getattr(config, "sparse_mlm_head", False) else step["slots"]
    return 6 * encoder * step["slots"] + attention * step["padded_squares"] + 6 * head * head_rows


def synthetic_sessions(count: int, lengths: str, max_seq_length: int, seed: int) -> Dataset:
    """`count` sessions drawn as generate_corpus.py draws them: [CLS] events [SEP], cut to max_seq_length."""
    sessions, _ = load_hdfs_sessions()
    sampler = SessionSampler.fit(sessions, lengths, services=32, vocab_size=10000, max_seq_length=512, seed=seed)
    tokens, offsets = sampler.sample_sessions(count, np.random.default_rng(seed))
    input_ids = []
    for i in range(count):
        events = tokens[offsets[i]: offsets[i + 1]][: max_seq_length - 2].tolist()
        input_ids.append([CLS_ID, *events, SEP_ID])
    return Dataset.from_dict({"input_ids": input_ids, "length": [len(ids) for ids in input_ids]})


def hdfs_training_sessions() -> list[list[str]]:
    """hdfs_train's sessions (14 distinct events; the bundled sample when the shared data is absent)."""
    path = HDFS_DIR / "hdfs_train" if (HDFS_DIR / "hdfs_train").is_file() else BUNDLED_HDFS_FILE
    with open(path, encoding="utf-8") as handle:
        return [line.split() for line in handle if line.strip()]


def event_text_sessions(count: int, lengths: str, max_seq_length: int, seed: int, tokenizer) -> Dataset:
    """`count` event-ID text sessions walking hdfs_train's Markov chain, tokenized as users' text is."""
    sessions = hdfs_training_sessions()
    sampler = SessionSampler.fit(sessions, lengths, services=1, vocab_size=10000, max_seq_length=512, seed=seed)
    events = sorted({e for s in sessions for e in s}, key=lambda e: (len(e), e))  # the sampler's event order
    name_of = dict(zip(sampler.token_ids[0].tolist(), events))
    tokens, offsets = sampler.sample_sessions(count, np.random.default_rng(seed))
    texts = [" ".join(name_of[t] for t in tokens[offsets[i]: offsets[i + 1]].tolist()) for i in range(count)]
    input_ids = tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]  # [CLS] events [SEP]
    return Dataset.from_dict({"input_ids": input_ids, "length": [len(ids) for ids in input_ids]})


def timed_steps_for(overrides: dict, args: argparse.Namespace) -> int:
    if overrides.get("train_sampling_strategy", "group_by_length") != "group_by_length":
        return args.steps
    megabatch = min(args.num_sessions // (4 * args.batch_size), MEGABATCH_BATCHES)  # as LengthGroupedSampler does
    return max(args.steps, megabatch - args.warmup_steps)


class ProfileSteps(TrainerCallback):
    """torch.profiler over the steps after the warm-up ones; prints the top operators by self CPU time."""

    def __init__(self, warmup_steps: int, name: str):
        self.warmup_steps, self.name = warmup_steps, name
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            self.profiler.start()
            self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.started
        self.profiler.stop()
        steps = state.global_step - self.warmup_steps
        averages = self.profiler.key_averages()
        print(f"\n== profile: {self.name}, {steps} steps, {seconds / steps:.3f} s/step (profiled) ==\n"
              + averages.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=44),
              file=sys.stderr)


def run_setup(name: str, overrides: dict, args: argparse.Namespace, dataset_for, tokenizer,
              profile_steps: int = 0) -> dict:
    device_flags = ["--use_cpu", "true"] if args.device == "cpu" else []
    precision = {"naive": "fp16"}.get(name, "auto") if args.device != "cpu" else "no"
    argv = [
        *(["--config", args.config] if args.config else []),
        "--output_dir", os.path.join(args.output_dir, name),
        "--max_steps", str((profile_steps or timed_steps_for(overrides, args)) + args.warmup_steps),
        "--per_device_train_batch_size", str(args.batch_size),
        "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no",
        "--logging_steps", "1", "--disable_tqdm", "true", "--dataloader_num_workers", "0",
        "--seed", str(args.seed), "--mixed_precision", precision, *device_flags,
    ]
    for key, value in overrides.items():
        argv += [f"--{key}", value]
    model_args, data_args, training_args, *_ = parse_args(argv)  # also scoring and export arguments
    if name == "naive":  # pad every batch to the longest a session may be
        data_args.pad_to_multiple_of = data_args.max_seq_length
    set_seed(training_args.seed)
    model = build_model(model_args, tokenizer, EVENTS_KIND if args.workload == "hdfs-text" else TOKEN_IDS_KIND)
    collator = build_training_collator(tokenizer, data_args)
    meter = ThroughputMeter(model, args.warmup_steps)
    trainer = LogBertTrainer(model=model, args=training_args, train_dataset=model_inputs(dataset_for(data_args)),
                      processing_class=tokenizer, data_collator=collator, callbacks=[meter])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if profile_steps:
        trainer.add_callback(ProfileSteps(args.warmup_steps, name))
    trainer.train()
    if profile_steps:
        return {}

    steps = meter.timed_steps()
    seconds = sum(s["seconds"] for s in steps)
    cpu_seconds = sum(s["cpu_seconds"] for s in steps)
    real = sum(s["real"] for s in steps)
    slots = sum(s["slots"] for s in steps)
    flops = sum(model_flops(model.config, s) for s in steps)
    hardware_flops = sum(executed_flops(model.config, s) for s in steps)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "setup": name,
        "settings": {
            "train_sampling_strategy": training_args.train_sampling_strategy,
            "pad_to_multiple_of": data_args.pad_to_multiple_of,
            "sparse_mlm_head": model.config.sparse_mlm_head,
            "end_of_session_probability": data_args.end_of_session_probability,
            "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        },
        "timed_steps": len(steps),
        "step_seconds": seconds / len(steps),
        "step_cpu_seconds": cpu_seconds / len(steps),
        "real_tokens_per_second": real / seconds,
        "real_tokens_per_cpu_second": real / cpu_seconds,
        "token_slots_per_second": slots / seconds,
        "padding_efficiency": real / slots,
        "sessions_per_second": sum(s["sessions"] for s in steps) / seconds,
        "mean_real_tokens_per_session": real / sum(s["sessions"] for s in steps),
        "model_tflops_per_second": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e12 / args.peak_tflops if args.peak_tflops else None,
        "executed_tflops_per_second": hardware_flops / seconds / 1e12,
        "hfu": hardware_flops / seconds / 1e12 / args.peak_tflops if args.peak_tflops else None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
    del trainer, model
    return result


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="A model/training YAML (default: the project defaults, "
                        "a 2-layer 128-wide model).")
    parser.add_argument("--steps", type=int, default=10,
                        help="Timed steps of the random-batch setups (grouped ones: a whole megabatch, at least this).")
    parser.add_argument("--warmup-steps", type=int, default=1, help="Untimed steps first.")
    parser.add_argument("--workload", choices=["token-ids", "hdfs-text"], default="token-ids",
                        help="token-ids: the reference's 10,000-id vocabulary; hdfs-text: HDFS event-ID text, "
                             "19 tokens.")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="Sessions per step (default: 32 for token-ids, as the reference per GPU; 16 for "
                             "hdfs-text).")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="Peak dense TFLOP/s of the device at the precision used, for MFU (H100 SXM bf16: 989).")
    parser.add_argument("--data-dir", default=None, help="Sessions from a generate_corpus.py corpus (else drawn).")
    parser.add_argument("--lengths", choices=["heavy", "hdfs"], default="heavy", help="Drawn session lengths.")
    parser.add_argument("--num-sessions", type=int, default=20000, help="Sessions to draw or load.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads on CPU. With 1, CPU time counts only the work (no spin-waiting), "
                        "which makes the per-CPU-second figures comparable on a shared machine.")
    parser.add_argument("--ablations", action="store_true", help="Also time the default with one setting undone.")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="After the timed runs, run each setup again for N steps under torch.profiler "
                        "and print its top operators (profiled steps are slower; they are not in the figures).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="Trainer output (default: a temporary directory).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    args.batch_size = args.batch_size or (16 if args.workload == "hdfs-text" else 32)
    logging.basicConfig(level=logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device == "cpu" and torch.get_num_threads() > 1 and os.getloadavg()[0] >= os.cpu_count():
        # Measured on the busy 2-core machine (benchmarks/README.md, hdfs-text): with 2 threads, in two runs of three,
        # the default's step went from ~0.25 to 1.4-2.4 s and the ratio from ~7x to 1.8-2.6x; its many small operators
        # each wait (and spin) for a second thread that other jobs hold, the naive setup's few large ones much less.
        logging.getLogger(__name__).warning(
            "%d intra-op threads on a CPU with load average %.1f: the default / naive ratio will mostly measure thread "
            "waits; pass --threads 1", torch.get_num_threads(), os.getloadavg()[0])
    temporary = tempfile.TemporaryDirectory(prefix="logbert-bench-train-")
    args.output_dir = args.output_dir or temporary.name
    if args.workload == "hdfs-text":
        if args.data_dir:
            raise SystemExit("--data-dir holds token-id sessions: drop it for --workload hdfs-text")
        tokenizer = build_event_tokenizer(Counter(e for s in hdfs_training_sessions() for e in s))
    else:
        tokenizer = build_token_id_tokenizer(10000)
    cache: dict[int, Dataset] = {}

    def dataset_for(data_args: DataArguments) -> Dataset:
        """The same sessions for every setup, cut to the configuration's max_seq_length."""
        if data_args.max_seq_length not in cache:
            if args.workload == "hdfs-text":
                cache[data_args.max_seq_length] = event_text_sessions(args.num_sessions, args.lengths,
                                                                      data_args.max_seq_length, args.seed, tokenizer)
            elif args.data_dir:
                loaded = DataArguments(data_dir=args.data_dir, max_seq_length=data_args.max_seq_length,
                                       validation_split_percentage=0, max_train_samples=args.num_sessions,
                                       data_cache_dir=os.path.join(args.output_dir, "cache"))
                cache[data_args.max_seq_length] = load_corpus(loaded, 10000, args.seed).train
            else:
                cache[data_args.max_seq_length] = synthetic_sessions(args.num_sessions, args.lengths,
                                                                     data_args.max_seq_length, args.seed)
        return cache[data_args.max_seq_length]

    setups = {**SETUPS, **(ABLATIONS if args.ablations else {})}
    results = {name: run_setup(name, overrides, args, dataset_for, tokenizer) for name, overrides in setups.items()}
    naive, default = results["naive"], results["default"]
    summary = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "workload": f"{args.workload} (vocabulary {len(tokenizer)})",
        "config": args.config or "(project defaults)",
        "batch_size": args.batch_size,
        "sessions": args.data_dir or f"{args.num_sessions} drawn ({args.lengths} lengths)",
        "threads": torch.get_num_threads(),
        "real_token_speedup": default["real_tokens_per_second"] / naive["real_tokens_per_second"],
        "real_token_speedup_by_cpu_time": default["real_tokens_per_cpu_second"] / naive["real_tokens_per_cpu_second"],
        "session_speedup": default["sessions_per_second"] / naive["sessions_per_second"],
        "load_average": os.getloadavg()[0],
        "setups": results,
    }
    print(json.dumps(summary, indent=2))
    header = (f"{'setup':26s} {'step s':>7} {'cpu s':>6} {'real tok/s':>10} {'tok/cpu-s':>10} {'sess/s':>7} "
              f"{'slots/s':>9} {'pad eff':>8} {'TFLOP/s':>8} {'exec TF/s':>9} {'MFU':>6}")
    lines = [header]
    for result in results.values():
        mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
        lines.append(f"{result['setup']:26s} {result['step_seconds']:7.3f} {result['step_cpu_seconds']:6.3f} "
                     f"{result['real_tokens_per_second']:10.0f} {result['real_tokens_per_cpu_second']:10.0f} "
                     f"{result['sessions_per_second']:7.2f} {result['token_slots_per_second']:9.0f} "
                     f"{result['padding_efficiency']:8.1%} {result['model_tflops_per_second']:8.3f} "
                     f"{result['executed_tflops_per_second']:9.3f} {mfu:>6}")
    lines.append(f"default / naive real-token throughput: {summary['real_token_speedup']:.2f}x (wall clock), "
                 f"{summary['real_token_speedup_by_cpu_time']:.2f}x (CPU time); sessions/s: "
                 f"{summary['session_speedup']:.2f}x ({summary['workload']}, "
                 f"load average {summary['load_average']:.1f})")
    print("\n" + "\n".join(lines), file=sys.stderr)
    for name, overrides in setups.items() if args.profile else ():
        run_setup(name, overrides, args, dataset_for, tokenizer, profile_steps=args.profile)
    temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
