#!/usr/bin/env python
"""Train LogBERT (a BERT masked-language model) on log sessions with the Hugging Face Trainer.

    python run_mlm_logs.py --config configs/logbert-base.yaml --data-dir DIR --output-dir OUT
    accelerate launch run_mlm_logs.py --config configs/logbert-base.yaml --data-dir DIR --output-dir OUT

With no data flag it trains on the bundled HDFS sample. Reads like transformers' run_mlm.py: parse arguments,
build tokenizer -> datasets -> model -> Trainer, then train and evaluate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import transformers
from huggingface_hub import errors as hub_errors
from transformers import set_seed

from logbert.calibration import calibrate_model_folder, calibration_sessions, known_count_vector_keys
from logbert.callbacks import (BestModelExportCallback, GracefulStopCallback, NonFiniteLossCallback, NonFiniteLossError,
                               ReadableCheckpointCallback)
from logbert.collator import build_training_collator, mask_for_evaluation
from logbert.config import ConfigError, parse_args, resolved_config
from logbert.console import configure_logging, log_to_file, print_error, warnings_said_once
from logbert.data import EVENTS_KIND, DataError, load_corpus, model_inputs, tokenize_events, write_rejections
from logbert.export import save_model_folder
from logbert.hub import HubError, keep_trainer_from_pushing, push_model_folder
from logbert.metrics import build_compute_metrics, preprocess_logits_for_metrics
from logbert.model import build_model
from logbert.model_files import KNOWN_COUNT_VECTORS_FILE, write_known_count_vectors
from logbert.prepare.templates import copy_parser_state, find_parser_state
from logbert.resume import (ResumeError, check_checkpoint_fits, checkpoint_tokenizer_path, prepare_output_dir,
                            resolve_checkpoint)
from logbert.tokenizer import (build_event_tokenizer, build_token_id_tokenizer, count_events, most_frequent_event_id,
                               vocabulary_fingerprint)
from logbert.trainer import LogBertTrainer

logger = logging.getLogger("run_mlm_logs")
# The full resolved config goes to OUTPUT_DIR/train.log only: it is a hundred lines.
details = logging.getLogger("run_mlm_logs.details")


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    model_args, data_args, training_args, scoring_args, config_path = parse_args(argv)
    if training_args.log_level in ("debug", "info"):  # asked for: the libraries' info lines on the terminal too
        configure_logging(verbose=True)
    if not training_args.should_log:  # the other processes of a distributed run: warnings only
        logging.getLogger().setLevel(logging.WARNING)
    set_seed(training_args.seed)

    # ---- Output folder and checkpoint: checked before any data is read ---------------------------------------------
    output_dir = training_args.output_dir
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir) if training_args.do_train \
        else None
    if checkpoint:
        check_checkpoint_fits(checkpoint, model_args)
    if training_args.should_save:
        prepare_output_dir(output_dir, resuming=bool(training_args.resume_from_checkpoint),
                           overwrite=training_args.overwrite_output_dir)
    log_file = log_to_file(os.path.join(output_dir, "train.log")) if training_args.should_save else None
    training_config = resolved_config(model_args, data_args, training_args, scoring_args)
    logger.info("Config %s; the full log is in %s", config_path or "(defaults)", log_file)
    details.info("Resolved config\n%s", training_config)

    # ---- Data: files -> Arrow-cached sessions -> vocabulary -> input_ids -------------------------------------------
    with training_args.main_process_first(desc="building the Arrow cache"):
        corpus = load_corpus(data_args, model_args.vocab_size, training_args.seed)
        if corpus.kind == EVENTS_KIND:
            # A resumed run keeps the checkpoint's vocabulary: its embedding rows are indexed by it.
            saved_vocabulary = checkpoint_tokenizer_path(checkpoint) or model_args.model_name_or_path
            event_counts = count_events(corpus.train)
            if saved_vocabulary:
                tokenizer = transformers.AutoTokenizer.from_pretrained(saved_vocabulary)
                unknown = set(event_counts) - set(tokenizer.get_vocab())
                if unknown:
                    logger.warning("%d events of the training data are not in the vocabulary of %s (e.g. %s); they "
                                   "are read as [UNK].", len(unknown), saved_vocabulary, sorted(unknown)[:5])
            else:
                tokenizer = build_event_tokenizer(event_counts, data_args.min_event_frequency)
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
    logger.info("Data: %d training and %d validation sessions, %d vocabulary tokens (%s)", len(train_dataset),
                len(eval_dataset) if eval_dataset else 0, len(tokenizer), corpus.kind)
    details.info("Data summary: %s", data_summary)
    if corpus.truncated:
        logger.warning("%d sessions were longer than max_seq_length %d and were truncated.", corpus.truncated,
                       data_args.max_seq_length)
    if corpus.rejected and training_args.should_save:
        path = write_rejections(corpus.rejected, output_dir)
        logger.warning("%d bad records were skipped; each is in %s with its reason.", len(corpus.rejected), path)

    # Data made by `logbert prepare` carries its log parser: it travels with the model, so that `logbert detect`
    # needs only the model folder.
    parser_state = find_parser_state(data_args.data_dir, corpus.train_files)

    # ---- Model ------------------------------------------------------------------------------------------------------
    model = build_model(model_args, tokenizer, corpus.kind)
    # Saved in config.json with every export: how the pipeline scores this model by default.
    model.config.update({"mlm_probability": data_args.mlm_probability, "scoring_mode": scoring_args.scoring_mode,
                         "next_event_window": scoring_args.next_event_window})

    def export(model_to_save, subdirectory: str | None, metrics: dict | None = None) -> None:
        directory = os.path.join(output_dir, subdirectory) if subdirectory else output_dir
        save_model_folder(model_to_save, tokenizer, directory, training_config, metrics, data_summary)
        if parser_state:
            copy_parser_state(parser_state, directory)

    # ---- Trainer ----------------------------------------------------------------------------------------------------
    do_eval = training_args.do_eval and eval_dataset is not None and len(eval_dataset) > 0
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
                   NonFiniteLossCallback(training_args.nan_loss_patience), ReadableCheckpointCallback()],
    )
    stopper = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GracefulStopCallback))
    try:
        return train_evaluate_export(trainer, stopper, checkpoint, do_eval, export, corpus, train_dataset,
                                     eval_dataset, tokenizer, training_args, scoring_args)
    finally:  # SIGTERM is ours from training start to the last export; NonFiniteLossError skips on_train_end
        stopper.restore_signal_handler()


def train_evaluate_export(trainer, stopper, checkpoint, do_eval, export, corpus, train_dataset, eval_dataset,
                          tokenizer, training_args, scoring_args) -> int:
    """Train, evaluate, export and calibrate, stopping cleanly at the next stage boundary after a SIGTERM."""
    output_dir = training_args.output_dir

    def stopped(where: str) -> bool:
        if stopper.received is None:
            return False
        logger.warning("Stopped by SIGTERM %s (step %d). Checkpoints are kept; resume with "
                       "--resume_from_checkpoint.", where, trainer.state.global_step)
        return True

    # ---- Train ------------------------------------------------------------------------------------------------------
    if training_args.do_train:
        if checkpoint:
            logger.info("Resuming from %s", checkpoint)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        if stopped("during training"):
            return 0
        metrics = dict(train_result.metrics, train_samples=len(train_dataset))
        logger.info("Trained %d steps in %.0f s (%.1f sessions/s), training loss %.4f", trainer.state.global_step,
                    metrics.get("train_runtime", 0), metrics.get("train_samples_per_second", 0),
                    metrics.get("train_loss", float("nan")))
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    # ---- Evaluate ---------------------------------------------------------------------------------------------------
    eval_metrics = None
    if do_eval:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(eval_dataset)
        logger.info("Evaluation: masked-event accuracy %.4f (always guessing the most frequent event: %.4f), "
                    "top-5 %.4f, loss %.4f, perplexity %.3g; all metrics in %s", eval_metrics.get("eval_accuracy", 0),
                    eval_metrics.get("eval_baseline_accuracy", 0), eval_metrics.get("eval_top_5_accuracy", 0),
                    eval_metrics.get("eval_loss", 0), eval_metrics.get("eval_perplexity", 0),
                    os.path.join(output_dir, "eval_results.json"))
        trainer.save_metrics("eval", eval_metrics)
        warn_if_below_baseline(eval_metrics)
    if stopped("during the final evaluation, before the final export") or not trainer.is_world_process_zero():
        return 0

    # ---- Export, known-normal gate, threshold -----------------------------------------------------------------------
    export(trainer.model, None, eval_metrics)
    directories = [d for d in (output_dir, os.path.join(output_dir, "best_model")) if os.path.isdir(d)]
    for directory in directories:  # never a gate left over from an earlier run or built with another vocabulary
        stale = os.path.join(directory, KNOWN_COUNT_VECTORS_FILE)
        if os.path.exists(stale):
            os.remove(stale)
    if scoring_args.known_normal_gate:  # before calibration: the threshold is set with the gate in place
        keys = known_count_vector_keys(train_dataset, tokenizer)
        for directory in directories:
            write_known_count_vectors(directory, keys)
        logger.info("Known-normal gate: %d distinct event multisets among %d training sessions.", len(keys),
                    len(train_dataset))
    if stopped("after the final export, before threshold calibration (set it with `logbert calibrate`)"):
        return 0
    if do_eval and (normal_sessions := calibration_sessions(corpus.validation, corpus.kind,
                                                            scoring_args.calibration_max_sessions)):
        for index, directory in enumerate(directories):  # best_model's warnings would repeat the final model's
            with warnings_said_once("logbert.calibration", "logbert.tail_fit") if index else contextlib.nullcontext():
                try:
                    settings = calibrate_model_folder(directory, normal_sessions, scoring_args.threshold_target_fpr,
                                                      scoring_args.score_name, scoring_args.num_candidates,
                                                      str(training_args.device))
                except ValueError as error:  # the model is trained and saved: say why it has no threshold
                    logger.warning("%s has no anomaly threshold: %s. Set one with `logbert calibrate --model %s "
                                   "--normal FILES`.", directory, error, directory)
                    continue
            logger.info("%s: anomaly threshold %.4g (%s) at target FPR %g on %d validation sessions",
                        directory, settings["anomaly_threshold"], settings["score_name"],
                        settings["threshold_target_fpr"], settings["calibration_sessions"])
            if index == 0:  # which part of the detector does the work, in one line
                known = settings.get("calibration_sessions_known_to_gate")
                logger.info("Detector: %s the model judges %s at threshold %.4g; the model alone's threshold is "
                            "%.4g (%s).",
                            f"the known-normal gate passes {known} of {settings['calibration_sessions']} validation "
                            "sessions (their event mix is in the training data);" if known is not None else
                            "no known-normal gate;", "the rest" if known is not None else "every session",
                            settings["anomaly_threshold"], settings["model_only_threshold"],
                            "fitted tail" if settings.get("threshold_method") == "gpd_tail" else "empirical quantile")
    else:
        logger.warning("No validation sessions: the model has no anomaly threshold. Set one with `logbert calibrate "
                       "--model %s --normal FILES`.", output_dir)
    logger.info("Final model in %s; best model (by eval loss) in %s", output_dir,
                os.path.join(output_dir, "best_model"))
    if training_args.push_to_hub:  # the folder as it is on disk: model, tokenizer, threshold, code, card
        push_model_folder(output_dir, trainer.hub_model_id or training_args.hub_model_id
                          or os.path.basename(os.path.abspath(output_dir)),
                          token=training_args.hub_token, private=bool(training_args.hub_private_repo))
    return 0


def warn_if_below_baseline(eval_metrics: dict) -> None:
    """A model that predicts masked events worse than always guessing the most frequent one has learnt nothing."""
    accuracy, baseline = eval_metrics.get("eval_accuracy"), eval_metrics.get("eval_baseline_accuracy")
    if accuracy is not None and baseline is not None and accuracy < baseline:
        logger.warning("!! The model predicts masked events WORSE than always guessing the most frequent event "
                       "(eval accuracy %.4f < baseline %.4f): it has not learnt the logs. Its anomaly scores mean "
                       "little; train longer or raise --learning_rate.", accuracy, baseline)


def cli(argv: list[str] | None = None) -> int:
    """Console entry point: input and configuration errors are reported in one line, not as a traceback."""
    try:
        return main(argv)
    except (ConfigError, DataError, NonFiniteLossError, HubError, ResumeError) as error:
        print_error(error)
        return 2
    except OSError as error:  # a full disk or a read-only folder while saving: what and where, in one line
        where = f"{error.filename}: " if error.filename else ""
        print_error(f"{where}{error.strerror or error} while writing the run's files; free space or pick another "
                    "--output_dir, then resume with --resume_from_checkpoint")
        return 2
    except (hub_errors.LocalTokenNotFoundError, hub_errors.OfflineModeIsEnabled, hub_errors.HfHubHTTPError) as error:
        # --push_to_hub makes the Trainer create the hub repository at start.
        message = f"--push_to_hub: the hub cannot be used ({type(error).__name__}: {error}). Log in with " \
                  "`hf auth login` (or set HF_TOKEN) on a machine with network access, or drop --push_to_hub."
        print_error(message)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
