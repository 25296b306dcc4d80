#!/usr/bin/env python
"""Train LogBERT (a BERT masked-language model) on log sessions with the Hugging Face Trainer.

    python run_mlm_logs.py --config configs/logbert-base.yaml --data-dir DIR --output-dir OUT
    accelerate launch run_mlm_logs.py --config configs/logbert-base.yaml --data-dir DIR --output-dir OUT

With no data flag it trains on the bundled HDFS sample. Reads like transformers' run_mlm.py: parse arguments,
build tokenizer -> datasets -> model -> Trainer, then train and evaluate.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter

import pyarrow.compute as pc
import transformers
from huggingface_hub import errors as hub_errors
from transformers import set_seed

from logbert.callbacks import (BestModelExportCallback, GracefulStopCallback, NonFiniteLossCallback, NonFiniteLossError,
                               ReproducibleResumeCallback)
from logbert.calibration import calibrate_model_folder, calibration_sessions, known_count_vector_keys
from logbert.collator import build_training_collator, mask_for_evaluation
from logbert.config import ConfigError, parse_args, resolved_config
from logbert.data import EVENTS_KIND, DataError, load_corpus, model_inputs, tokenize_events, write_rejections
from logbert.export import find_latest_checkpoint, save_model_folder
from logbert.hub import HubError, keep_trainer_from_pushing, push_model_folder
from logbert.metrics import build_compute_metrics, preprocess_logits_for_metrics
from logbert.model import build_model
from logbert.pipeline import write_known_count_vectors
from logbert.tokenizer import (build_event_tokenizer, build_token_id_tokenizer, count_events, never_masked_ids,
                               vocabulary_fingerprint)
from logbert.trainer import LogBertTrainer

logger = logging.getLogger("run_mlm_logs")


def most_frequent_event_id(dataset, tokenizer) -> int | None:
    """The most frequent maskable token id in the training data: the baseline a useful model must beat.

    Counted a chunk at a time, so memory stays flat at the reference scale.
    """
    counts = Counter()
    for chunk in dataset.with_format("arrow").iter(batch_size=100_000):
        frequencies = pc.value_counts(pc.list_flatten(chunk["input_ids"]))
        counts.update(dict(zip(frequencies.field("values").to_pylist(), frequencies.field("counts").to_pylist())))
    for token_id in never_masked_ids(tokenizer):
        counts.pop(token_id, None)
    return counts.most_common(1)[0][0] if counts else None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    model_args, data_args, training_args, config_path = parse_args(argv)
    if training_args.should_log:  # as run_mlm.py: the default "passive" log level means info
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info("Config %s\n%s", config_path or "(defaults)", resolved_config(model_args, data_args, training_args))
    set_seed(training_args.seed)

    # ---- Data: files -> Arrow-cached sessions -> vocabulary -> input_ids -------------------------------------------
    with training_args.main_process_first(desc="building the Arrow cache"):
        corpus = load_corpus(data_args, model_args.vocab_size, training_args.seed)
        if corpus.kind == EVENTS_KIND:
            if model_args.model_name_or_path:
                tokenizer = transformers.AutoTokenizer.from_pretrained(model_args.model_name_or_path)
            else:
                tokenizer = build_event_tokenizer(count_events(corpus.train), data_args.min_event_frequency)
            cache = data_args.cache_root() / "encoded"
            key = f"{corpus.cache_key}-{vocabulary_fingerprint(tokenizer)}-{data_args.max_seq_length}"
            train_dataset = tokenize_events(corpus.train, tokenizer, data_args.max_seq_length,
                                            cache / f"{key}-train.arrow", data_args.overwrite_cache)
            eval_dataset = corpus.validation and tokenize_events(
                corpus.validation, tokenizer, data_args.max_seq_length, cache / f"{key}-validation.arrow",
                data_args.overwrite_cache)
        else:
            tokenizer = build_token_id_tokenizer(model_args.vocab_size)
            train_dataset, eval_dataset = corpus.train, corpus.validation
    data_summary = {**corpus.summary(), "vocabulary_tokens": len(tokenizer), "train_file_list": corpus.train_files}
    logger.info("Data: %s", data_summary)
    if corpus.truncated:
        logger.warning("%d sessions were longer than max_seq_length %d and were truncated.", corpus.truncated,
                       data_args.max_seq_length)
    if corpus.rejected and training_args.should_save:
        path = write_rejections(corpus.rejected, training_args.output_dir)
        logger.warning("%d bad records were skipped; each is in %s with its reason.", len(corpus.rejected), path)

    # ---- Model ------------------------------------------------------------------------------------------------------
    model = build_model(model_args, tokenizer, corpus.kind)
    training_config = resolved_config(model_args, data_args, training_args)

    def export(model_to_save, subdirectory: str | None, metrics: dict | None = None) -> None:
        directory = os.path.join(training_args.output_dir, subdirectory) if subdirectory else training_args.output_dir
        save_model_folder(model_to_save, tokenizer, directory, training_config, metrics, data_summary)

    # ---- Trainer ----------------------------------------------------------------------------------------------------
    do_eval = eval_dataset is not None and len(eval_dataset) > 0
    if not do_eval:
        training_args.eval_strategy = "no"
    max_k = max(training_args.top_k)
    keep_trainer_from_pushing(training_args)  # the exported folder is pushed once, at the end (logbert/hub.py)
    trainer = LogBertTrainer(
        model=model,
        args=training_args,
        train_dataset=model_inputs(train_dataset),
        eval_dataset=mask_for_evaluation(model_inputs(eval_dataset), tokenizer, data_args, training_args.seed)
        if do_eval else None,
        processing_class=tokenizer,
        data_collator=build_training_collator(tokenizer, data_args),
        compute_metrics=build_compute_metrics(training_args.top_k, most_frequent_event_id(train_dataset, tokenizer)),
        preprocess_logits_for_metrics=lambda logits, labels: preprocess_logits_for_metrics(logits, labels, max_k),
        # GracefulStopCallback before NonFiniteLossCallback, so that the weights are checked on a SIGTERM save too.
        callbacks=[BestModelExportCallback(export), GracefulStopCallback(),
                   NonFiniteLossCallback(training_args.nan_loss_patience), ReproducibleResumeCallback()],
    )
    stopper = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GracefulStopCallback))

    # ---- Train ------------------------------------------------------------------------------------------------------
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint in ("latest", "true", "True"):
            checkpoint = find_latest_checkpoint(training_args.output_dir)
            if checkpoint is None:
                logger.warning("--resume_from_checkpoint: no complete checkpoint in %s; starting from scratch.",
                               training_args.output_dir)
        if checkpoint:
            logger.info("Resuming from %s", checkpoint)
        try:
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
        finally:  # NonFiniteLossError and other exceptions skip on_train_end
            stopper.restore_signal_handler()
        if stopper.received is not None:
            logger.warning("Stopped by SIGTERM at step %d; resume with --resume_from_checkpoint.",
                           trainer.state.global_step)
            return 0
        metrics = dict(train_result.metrics, train_samples=len(train_dataset))
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    # ---- Evaluate ---------------------------------------------------------------------------------------------------
    eval_metrics = None
    if do_eval:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    if trainer.is_world_process_zero():
        export(trainer.model, None, eval_metrics)
        # ---- Threshold: from held-out normal sessions, no labels --------------------------------------------------
        directories = [d for d in (training_args.output_dir, os.path.join(training_args.output_dir, "best_model"))
                       if os.path.isdir(d)]
        if training_args.known_normal_gate:  # before calibration: the threshold is set with the gate in place
            keys = known_count_vector_keys(train_dataset, tokenizer)
            for directory in directories:
                write_known_count_vectors(directory, keys)
            logger.info("Known-normal gate: %d distinct event multisets among %d training sessions.", len(keys),
                        len(train_dataset))
        if do_eval and (normal_sessions := calibration_sessions(corpus.validation, corpus.kind,
                                                                training_args.calibration_max_sessions)):
            for directory in directories:
                settings = calibrate_model_folder(directory, normal_sessions, training_args.threshold_target_fpr,
                                                  training_args.score_name, training_args.num_candidates,
                                                  str(training_args.device))
                logger.info("%s: anomaly threshold %.4g (%s) at target FPR %g on %d validation sessions",
                            directory, settings["anomaly_threshold"], settings["score_name"],
                            settings["threshold_target_fpr"], settings["calibration_sessions"])
        logger.info("Final model in %s; best model (by eval loss) in %s", training_args.output_dir,
                    os.path.join(training_args.output_dir, "best_model"))
        if training_args.push_to_hub:  # the folder as it is on disk: model, tokenizer, threshold, code, card
            push_model_folder(training_args.output_dir, trainer.hub_model_id or training_args.hub_model_id
                              or os.path.basename(os.path.abspath(training_args.output_dir)),
                              token=training_args.hub_token, private=bool(training_args.hub_private_repo))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: input and configuration errors are reported in one line, not as a traceback."""
    try:
        return main(argv)
    except (ConfigError, DataError, NonFiniteLossError, HubError) as error:
        logger.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (hub_errors.LocalTokenNotFoundError, hub_errors.OfflineModeIsEnabled, hub_errors.HfHubHTTPError) as error:
        # --push_to_hub makes the Trainer create the hub repository at start.
        message = f"--push_to_hub: the hub cannot be used ({type(error).__name__}: {error}). Log in with " \
                  "`hf auth login` (or set HF_TOKEN) on a machine with network access, or drop --push_to_hub."
        logger.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
