"""The `logbert score|evaluate|calibrate|push` subcommands (also the logbert-score, ... console scripts).

Each parses its own dataclass of flags; input errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

# Light imports only: `--help` and input errors answer before torch, datasets and the model load (seconds).
from .ingest.files import expand_inputs
from .ingest.records import DataError, Rejection, write_rejections
from .session import normalize_session

logger = logging.getLogger("logbert")


@dataclass(kw_only=True)
class ScoringFlags:
    """How the pipeline scores: shared by score, evaluate and calibrate (None: the model's own setting)."""

    scoring_mode: str | None = field(
        default=None, metadata={"help": "linear (O(L) per session) or exhaustive (O(L^2), the earlier scoring). "
                                "Default: the model's setting.", "choices": ["linear", "exhaustive"]})
    next_event_window: int | None = field(
        default=None, metadata={"help": "Events a left-to-right score reads (linear mode). Default: the model's."})
    batch_size: int | None = field(default=None, metadata={"help": "Model rows per forward pass (at most)."})
    masked_scores: bool = field(
        default=True, metadata={"help": "Score each event with both sides visible too. --no_masked_scores computes "
                                "only what next_max_nll and end_nll need (same verdict, about a third of the "
                                "work on HDFS); miss_ratio, mean_nll, max_nll and per-event probability are null. "
                                "Calibration leaves them out by itself when the score does not read them."})


@dataclass
class ScoreArguments(ScoringFlags):
    """Score session files with a trained model: one JSON line per session (anomaly_score, is_anomaly, events)."""

    model: str = field(metadata={"help": "Trained LogBERT folder (or hub repo id)."})
    input: list[str] = field(metadata={"help": "Session files or globs (JSON, JSON Lines, event-ID text)."})
    output: str = field(default="scores.jsonl", metadata={"help": "Where the per-session results go (JSON Lines)."})
    threshold: float | None = field(default=None, metadata={"help": "Override the model's calibrated threshold."})
    num_candidates: int | None = field(default=None, metadata={"help": "Override top-g of LogBERT's miss criterion."})
    return_events: bool = field(
        default=True, metadata={"help": "Per-event details in each output line (--no_return_events leaves them out)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... Default: a GPU when present."})
    dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 (GPU). Default: float32."})
    chunk_size: int = field(default=2048, metadata={"help": "Sessions scored together (bounds memory)."})
    skip_bad_records: bool = field(default=False, metadata={"help": "Quarantine unreadable records, not fail."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model folder's own pipeline code."})


@dataclass
class EvaluateArguments(ScoringFlags):
    """Detection metrics, per-session scores and plots on labelled sessions, beside a count-vector baseline."""

    model: str = field(metadata={"help": "Trained LogBERT folder."})
    output_dir: str = field(metadata={"help": "Where metrics.json, scores.jsonl and the PNG plots go."})
    normal: list[str] | None = field(default=None, metadata={"help": "Files of normal sessions."})
    abnormal: list[str] | None = field(default=None, metadata={"help": "Files of anomalous sessions."})
    labelled: list[str] | None = field(default=None, metadata={"help": "Files whose records carry a 'label'."})
    train: list[str] | None = field(
        default=None,
        metadata={"help": "Training files for the count-vector baseline. Default: those recorded with the model."},
    )
    threshold: float | None = field(default=None, metadata={"help": "Override the model's calibrated threshold."})
    projected_normal_count: int | None = field(
        default=None,
        metadata={"help": "Project precision/F1 to this many normal sessions (HDFS protocol: 553366)."},
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda ... Default: a GPU when present."})
    dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 (GPU)."})
    skip_bad_records: bool = field(default=False, metadata={"help": "Quarantine unreadable records, not fail."})


def scoring_settings(args) -> dict:
    """The pipeline keyword arguments a command's flags set (None: the model's own setting)."""
    names = ("scoring_mode", "next_event_window", "batch_size")
    settings = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "masked_scores", True) is False:
        settings["masked_scores"] = False
    return settings


def load_detector(model: str, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False):
    """The `log-anomaly` pipeline for a model folder: our own class unless remote code is asked for."""
    import torch
    from safetensors import SafetensorError
    from transformers import pipeline

    from .pipeline import LogAnomalyPipeline

    if os.path.isdir(model):
        check_model_folder(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype) if dtype else None
    kwargs = {"device": device}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        if trust_remote_code:
            detector = pipeline(model=model, trust_remote_code=True, **kwargs)
        else:
            detector = pipeline("log-anomaly", model=model, pipeline_class=LogAnomalyPipeline, **kwargs)
    except (OSError, RuntimeError, KeyError, TypeError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{model}: the model cannot be loaded ({first_line}); is it a complete model folder "
                         "written by training?") from None
    rows = getattr(detector.model.config, "tokenizer_vocab_size", None) or detector.model.config.vocab_size
    if len(detector.tokenizer) > rows:
        raise ValueError(f"{model}: its tokenizer has {len(detector.tokenizer)} tokens but the model was trained "
                         f"with {rows}: the tokenizer comes from another run")
    from .ingest.glibc_heap import release_freed_memory

    detector.after_forward = release_freed_memory  # resident memory stays flat over a long stream (see there)
    return detector


# What a model folder needs for scoring; without the tokenizer transformers would build an empty 5-token one and
# every event would silently become [UNK].
REQUIRED_MODEL_FILES = ("config.json", "tokenizer.json")
REQUIRED_CONFIG_KEYS = ("vocab_size", "max_position_embeddings", "hidden_size")


def check_model_folder(model: str) -> None:
    """Refuse, in one line, a model folder that would load into wrong scores or a traceback."""
    missing = [name for name in REQUIRED_MODEL_FILES if not os.path.isfile(os.path.join(model, name))]
    if not any(os.path.isfile(os.path.join(model, name)) for name in ("model.safetensors",
                                                                       "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise ValueError(f"{model}: not a complete LogBERT model folder (missing {', '.join(missing)})")
    try:
        config = json.loads(Path(model, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{model}/config.json is not readable JSON: {error}") from None
    absent = [key for key in REQUIRED_CONFIG_KEYS if not isinstance(config.get(key), int)]
    if absent:
        raise ValueError(f"{model}/config.json lacks {', '.join(absent)}: it is damaged or not from this trainer")


def _setup_logging() -> None:
    from .console import configure_logging

    configure_logging()


def parse_command(dataclass_type, argv: list[str] | None):
    """The command's flags as its dataclass; an unknown or mistyped flag is one line naming the closest flag."""
    from .config import ConfigError, unknown_flags_error

    parser = HfArgumentParser(dataclass_type, allow_abbrev=False, description=dataclass_type.__doc__)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ConfigError(str(unknown_flags_error(unknown, parser)))
    return dataclass_type(**vars(namespace))


def run_command(command, dataclass_type, argv: list[str] | None) -> int:
    """Parse, run, and turn the errors a user can fix into one line on stderr (exit code 2)."""
    from .config import ConfigError
    from .console import print_error

    _setup_logging()
    try:
        return command(parse_command(dataclass_type, argv))
    except (ConfigError, DataError, ValueError, OSError) as error:
        print_error(error)
        return 2


def _report_rejections(rejected: list[Rejection], directory: str) -> None:
    if rejected:
        path = write_rejections(rejected, directory)
        logger.warning("%d unreadable records were skipped; each is in %s with its reason.", len(rejected), path)


def score_main(argv: list[str] | None = None) -> int:
    """logbert score: stream session files through the model, one JSON line per session."""
    return run_command(_score, ScoreArguments, argv)


def _score(args: ScoreArguments) -> int:
    import time

    files = expand_inputs(args.input, "--input")  # input errors first, before anything heavy loads
    from .evaluation import iter_sessions, score_stream

    detector = load_detector(args.model, args.device, args.dtype, args.trust_remote_code)
    rejected: list[Rejection] = []
    count = flagged = events = 0
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end: a failed run never wipes the previous results.
    partial = output.with_name(f".{output.name}.partial")
    started = time.perf_counter()
    try:
        with open(partial, "w", encoding="utf-8") as handle:
            sessions = iter_sessions(files, args.skip_bad_records, rejected)
            for path, number, label, result in score_stream(
                    detector, sessions, args.chunk_size, rejected=rejected if args.skip_bad_records else None,
                    threshold=args.threshold, **scoring_settings(args),
                    num_candidates=args.num_candidates, return_events=args.return_events):
                record = {"file": path, "record": number, **({"label": label} if label >= 0 else {}), **result}
                handle.write(json.dumps(record, allow_nan=False) + "\n")
                count += 1
                events += result["num_events"]
                if result["is_anomaly"]:
                    flagged += 1
                    if flagged <= MAX_ALERTS_PRINTED:
                        print(alert_line(record), flush=True)
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
    elapsed = max(time.perf_counter() - started, 1e-9)
    _report_rejections(rejected, str(output.parent))
    if flagged > MAX_ALERTS_PRINTED:
        print(f"... and {flagged - MAX_ALERTS_PRINTED} more flagged sessions in {output}")
    logger.info("Scored %d sessions (%.1f sessions/s, %.0f events/s), %d flagged as anomalous; results in %s",
                count, count / elapsed, events / elapsed, flagged, output)
    return 0


# Flagged sessions printed on the terminal by `logbert score`; all of them are in the output file.
MAX_ALERTS_PRINTED = 20


def most_surprising_event(result: dict) -> dict | None:
    """The event that made a session anomalous: the least probable one, read left to right where available."""
    if "events" not in result:  # an evaluation row keeps only this event (see `explained`)
        return result.get("most_surprising_event")
    events = result["events"] or []

    def surprise(event: dict) -> float:
        probabilities = [p for p in (event.get("probability"), event.get("next_probability")) if p is not None]
        return -min(probabilities) if probabilities else float("-inf")  # nothing scored: never the worst

    return max(events, key=lambda event: (event.get("unseen", False), surprise(event)), default=None)


def alert_line(record: dict) -> str:
    """One terminal line per flagged session: where it is, its score, and what gave it away (an event or its end)."""
    where = record.get("session_id") or f"{record['file']}:{record['record']}"
    line = f"ANOMALY {where}: score {record['anomaly_score']:.3f} > {record['threshold']:.3f}"
    if result_ends_early(record):
        line += f"; the session ends where it should not (end slot, p={math.exp(-record['end_nll']):.2g})"
    elif (worst := most_surprising_event(record)) is not None:
        what = "unseen in training" if worst.get("unseen") else (
            f"p={min(p for p in (worst.get('probability'), worst.get('next_probability')) if p is not None):.2g}")
        line += f"; event {worst['event']} at position {worst['position']} ({what})"
        if worst.get("template"):
            line += f": {worst['template']}"
    return line


# What `logbert evaluate` keeps of a session's events: the one that gave it away, with its template text.
EXPLANATION_KEYS = ("position", "event", "event_name", "template", "probability", "next_probability", "unseen")


def explained(result: dict) -> dict:
    """The result without its per-event list (too big for every test session), but with its most surprising
    event and whether its ending scored worst (`ends_early`), so that each row of scores.jsonl says what drove
    its score."""
    worst = most_surprising_event(result)
    kept = {key: value for key, value in result.items() if key != "events"}
    kept["most_surprising_event"] = None if worst is None else {k: worst[k] for k in EXPLANATION_KEYS if k in worst}
    kept["ends_early"] = result_ends_early(result)
    return kept


def result_ends_early(result: dict) -> bool:
    """The end slot gave the session away: with a score that reads it left to right, no event was as surprising
    as the session ending where it does (a truncated session, every event of it plausible)."""
    from .scoring import LEFT_TO_RIGHT_SCORES  # here: the module's top imports stay light (see there)

    if result.get("score_name", "next_max_nll") not in LEFT_TO_RIGHT_SCORES or "next_max_nll" not in result:
        return False
    return not result.get("num_unseen") and result.get("end_nll", 0.0) >= result["next_max_nll"]


def evaluate_main(argv: list[str] | None = None) -> int:
    """logbert evaluate: detection metrics, per-session scores and plots, beside a count-vector baseline."""
    return run_command(_evaluate, EvaluateArguments, argv)


def _evaluate(args: EvaluateArguments) -> int:
    import time

    import numpy as np

    from .evaluation import CountVectorBaseline, detection_metrics, iter_sessions, score_stream, write_plots
    from .export import write_model_card

    if not (args.normal or args.abnormal or args.labelled):
        raise ValueError("give test sessions: --normal and --abnormal files, or --labelled files")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rejected: list[Rejection] = []
    sources = [(expand_inputs(args.normal, "--normal"), 0), (expand_inputs(args.abnormal, "--abnormal"), 1),
               (expand_inputs(args.labelled, "--labelled"), None)]
    items = []
    for files, forced_label in sources:
        for path, number, session, label in iter_sessions(files, args.skip_bad_records, rejected):
            label = forced_label if forced_label is not None else label
            if label not in (0, 1):
                raise DataError(f"{path}: record {number}: --labelled files need a 'label' (0/1) on every record")
            items.append((path, number, session, label))
    if not items:
        raise ValueError("no test session found")

    train_files = args.train
    if not train_files:
        summary_path = Path(args.model) / "data_summary.json"
        recorded = json.loads(summary_path.read_text()).get("train_file_list", []) if summary_path.exists() else []
        train_files = [f for f in recorded if os.path.exists(f)]
    baseline = None
    if train_files:
        baseline = CountVectorBaseline(session for _, _, session, _ in iter_sessions(expand_inputs(
            train_files, "--train"), skip_bad_records=True))
    else:
        logger.warning("No training files known (--train): the count-vector baseline is skipped.")

    detector = load_detector(args.model, args.device, args.dtype)
    started = time.perf_counter()
    results = [explained(result) for *_, result in score_stream(detector, iter(items), total=len(items), top_n=1,
                                                                **scoring_settings(args), threshold=args.threshold)]
    elapsed = max(time.perf_counter() - started, 1e-9)
    logger.info("Scored %d sessions in %.1f s (%.1f sessions/s, %.0f events/s)", len(results), elapsed,
                len(results) / elapsed, sum(r["num_events"] for r in results) / elapsed)
    threshold = results[0]["threshold"]
    if threshold is None:
        raise ValueError(f"{args.model} has no calibrated threshold: pass --threshold")
    scores = np.array([r["anomaly_score"] for r in results], dtype=float)
    labels = np.array([label for *_, label in items])
    report = {
        "logbert": detection_metrics(scores, labels, threshold, args.projected_normal_count),
        "score_name": results[0]["score_name"],
        "known_normal_gate": results[0]["known_count_vector"] is not None,
        "counts": {"normal": int((labels == 0).sum()), "anomalous": int((labels == 1).sum()),
                   "distinct_sessions": len({tuple(map(str, _events(s))) for _, _, s, _ in items})},
        "model": str(args.model),
    }
    model_only_threshold = getattr(detector.model.config, "model_only_threshold", None)
    if report["known_normal_gate"] and model_only_threshold is not None and args.threshold is None:
        # The model alone, at its own label-free threshold: what the gate adds is visible beside it.
        report["logbert_model_only"] = detection_metrics([r["model_score"] for r in results], labels,
                                                         model_only_threshold, args.projected_normal_count)
    baseline_scores = None
    if baseline is not None:
        baseline_scores = np.array([baseline.score(session) for _, _, session, _ in items])
        report["count_vector_baseline"] = detection_metrics(baseline_scores, labels, 0.5,
                                                            args.projected_normal_count)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    with open(output_dir / "scores.jsonl", "w", encoding="utf-8") as handle:
        for index, ((path, number, _, label), result) in enumerate(zip(items, results)):
            row = {"file": path, "record": number, "label": int(label), **result}
            if baseline_scores is not None:
                row["count_vector_baseline_anomaly"] = bool(baseline_scores[index] > 0.5)
            handle.write(json.dumps(row) + "\n")
    model_scores = [r["model_score"] for r in results] if report["known_normal_gate"] else None
    plots = write_plots(output_dir, scores, labels, threshold, baseline_scores, model_scores,
                        model_only_threshold if args.threshold is None else None)
    model_dir = Path(args.model)
    if (model_dir / "config.json").exists() and os.access(model_dir, os.W_OK):
        # The model card reports detection quality once it has been measured.
        (model_dir / "detection_metrics.json").write_text(json.dumps(
            {**report["logbert"], "score_name": report["score_name"], **{f"test_{k}": v for k, v in
                                                                       report["counts"].items()}}, indent=2))
        write_model_card(model_dir)
    _report_rejections(rejected, str(output_dir))
    _print_report(report)
    _print_false_positives(items, results)
    logger.info("Wrote %s, %s and %s", output_dir / "metrics.json", output_dir / "scores.jsonl", ", ".join(plots))
    return 0


def _events(session) -> list:
    normal = normalize_session(session)
    return normal.events if normal.events is not None else normal.token_ids


def _print_report(report: dict) -> None:
    columns = ["precision", "recall", "f1", "fpr", "auroc", "auprc", "projected_f1"]
    rows = [("LogBERT" + (" + known-normal gate" if report.get("known_normal_gate") else ""), report["logbert"])]
    if "logbert_model_only" in report:
        rows.append(("LogBERT model alone", report["logbert_model_only"]))
    if "count_vector_baseline" in report:
        rows.append(("count-vector baseline", report["count_vector_baseline"]))
    print("\n| detector | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, metrics in rows:
        cells = [f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    counts = report["counts"]
    print(f"\n{counts['normal']} normal, {counts['anomalous']} anomalous sessions "
          f"({counts['distinct_sessions']} distinct); threshold {report['logbert']['threshold']:.4g} "
          f"on score '{report['score_name']}'\n")


def _print_false_positives(items: list, results: list[dict], limit: int = 5) -> None:
    """The first normal sessions the detector flagged, each with the event (and template) that gave it away."""
    flagged = [{"file": path, "record": number, **result} for (path, number, _, label), result in zip(items, results)
               if label == 0 and result["is_anomaly"]]
    if flagged:
        print(f"Normal sessions flagged (false positives): {len(flagged)}; the first {min(limit, len(flagged))}:")
        for record in flagged[:limit]:
            print("  " + alert_line(record))
        print()


@dataclass
class PushArguments:
    """Upload a trained model folder, as it is on disk, to the Hugging Face hub."""

    model: str = field(metadata={"help": "Exported model folder (OUT or OUT/best_model)."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. ORG/logbert-hdfs."})
    token: str | None = field(default=None, metadata={"help": "Hub token. Default: HF_TOKEN or the saved login."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})


def push_main(argv: list[str] | None = None) -> int:
    """logbert push: upload a trained model folder, as it is on disk, to the Hugging Face hub."""
    return run_command(_push, PushArguments, argv)


def _push(args: PushArguments) -> int:
    from .hub import HubError, push_model_folder

    try:
        url = push_model_folder(args.model, args.repo_id, token=args.token, private=args.private)
    except HubError as error:
        raise ValueError(str(error)) from None
    print(f"pushed {args.model} to {url}")
    return 0


@dataclass
class CalibrateArguments(ScoringFlags):
    """Set a model's anomaly threshold: from normal sessions at a target false-positive rate, or a labelled dev set."""

    model: str = field(metadata={"help": "Trained LogBERT folder whose threshold is (re)set."})
    normal: list[str] | None = field(
        default=None, metadata={"help": "Held-out normal sessions: the threshold flags --target_fpr of them."}
    )
    dev: list[str] | None = field(
        default=None,
        metadata={"help": "Optional labelled development files ('label' on every record): the threshold "
                  "maximises F1 on them. Never use the test set here."},
    )
    target_fpr: float = field(default=0.001, metadata={"help": "Share of --normal sessions flagged."})
    score_name: str | None = field(default=None, metadata={"help": "Session score to threshold."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda ... Default: a GPU when present."})


def calibrate_main(argv: list[str] | None = None) -> int:
    """logbert calibrate: set a model's anomaly threshold from normal sessions (or a labelled dev set)."""
    return run_command(_calibrate, CalibrateArguments, argv)


def _calibrate(args: CalibrateArguments) -> int:
    from .calibration import apply_scoring_config, calibrate, tune_threshold_on_dev
    from .evaluation import iter_sessions
    from .export import write_model_card

    if bool(args.normal) == bool(args.dev):
        raise ValueError("give either --normal files (label-free) or --dev files (labelled), not both")
    detector = load_detector(args.model, args.device)
    if args.normal:
        sessions = [s for _, _, s, _ in iter_sessions(expand_inputs(args.normal, "--normal"))]
        settings = calibrate(detector, sessions, args.target_fpr, args.score_name, **scoring_settings(args))
    else:
        items = list(iter_sessions(expand_inputs(args.dev, "--dev")))
        if any(label not in (0, 1) for *_, label in items):
            raise DataError("--dev files need a 'label' (0/1) on every record")
        settings = tune_threshold_on_dev(detector, [s for _, _, s, _ in items], [label for *_, label in items])
    apply_scoring_config(args.model, settings)
    write_model_card(args.model)
    print(f"{args.model}: anomaly threshold {settings['anomaly_threshold']:.6g} on '{settings['score_name']}' "
          f"from {settings['calibration_sessions']} sessions")
    return 0
