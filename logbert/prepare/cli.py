"""Command lines of the prepare stage: `logbert prepare` (raw logs -> sessions) and `logbert detect` (-> alerts)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .presets import DEFAULT_DEPTH, DEFAULT_LOG_FORMAT, DEFAULT_MASKS, DEFAULT_SIM_TH, NAMED_MASKS, PRESETS, get_preset
from .reading import PrepareError
from .run import PrepareSettings, prepare_logs
from .sessions import SessionRule
from .templates import DrainSettings

logger = logging.getLogger("logbert")
SESSION_FLAGS = ("session_regex", "session_field", "window_size", "time_window")
MIN_USEFUL_MEAN_SESSION_LENGTH = 2.0  # below it, prepare warns: the sessions say little about event order


def _add_session_flags(parser: argparse.ArgumentParser, closing_only: bool = False) -> None:
    group = parser.add_argument_group("sessions")
    if not closing_only:
        group.add_argument("--session_regex", help=r"Group lines by the ids this regex finds in them (e.g. "
                           r"'blk_-?\d+'; its first group when it has one). A line naming several ids joins each.")
        group.add_argument("--session_field", help="Group lines by the value of this header field (e.g. Node).")
        group.add_argument("--window_size", type=int, help="Group lines into windows of N lines.")
        group.add_argument("--window_step", type=int, help="Start a window every N lines (sliding; default: size).")
        group.add_argument("--time_window", type=float, help="Group lines into windows of this many seconds.")
    group.add_argument("--inactivity_timeout", type=float,
                       help="Close a session after this many seconds of log time without a line.")
    group.add_argument("--max_events", type=int, help="Close a session when it reaches this many events.")


def build_prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logbert prepare", allow_abbrev=False,
        description="Parse raw log files into Drain3 templates and write sessions of event ids "
                    "(preprocessed_logs_YYYY-MM-DD.jsonl) that `logbert train --data-dir DIR` trains on as they are, "
                    "with templates.csv, parser_state.json (travels with the model) and prepare_summary.json.",
        epilog="Example: logbert prepare --preset hdfs --input HDFS.log --label_file anomaly_label.csv "
               "--output_dir data/hdfs")
    parser.add_argument("--input", nargs="+", required=True, help="Raw log files, plain or gzip (- for stdin).")
    parser.add_argument("--output_dir", required=True, help="Where the session files and parser state go.")
    parser.add_argument("--preset", choices=sorted(PRESETS), type=str.lower,
                        help="Log format, masking, Drain settings, timestamps and session rule of a known system.")
    parser.add_argument("--log_format", help="Loghub-style header, e.g. '<Date> <Time> <Level> <Component>: "
                        "<Content>' (needs <Content>). Default: the preset's, else the whole line is the content.")
    mining = parser.add_argument_group("template mining (Drain3)")
    mining.add_argument("--mask", nargs="*", choices=[*NAMED_MASKS, "none"],
                        help=f"Named masks instead of the preset's (default without preset: "
                             f"{' '.join(DEFAULT_MASKS)}); 'none' for no named mask.")
    mining.add_argument("--mask_regex", action="append", default=[],
                        help="Extra regex whose matches become a parameter <*> (repeatable).")
    mining.add_argument("--depth", type=int, help=f"Drain tree depth (default: preset's, else {DEFAULT_DEPTH}).")
    mining.add_argument("--sim_th", type=float, help=f"Drain similarity threshold (default: preset's, else "
                        f"{DEFAULT_SIM_TH}).")
    mining.add_argument("--max_children", type=int, default=100, help="Drain's max children per tree node.")
    mining.add_argument("--extra_delimiters", nargs="*", default=[], help="Split tokens at these too.")
    mining.add_argument("--mine_in_background", choices=["auto", "yes", "no"], default="auto",
                        help="Run Drain3 in a second process beside the rest (same output). auto: with 2+ cores "
                             "and at least 8 MB of input files.")
    _add_session_flags(parser)
    other = parser.add_argument_group("timestamps, labels, outputs")
    other.add_argument("--time_fields", nargs="+", help="Header fields holding the timestamp (e.g. Date Time).")
    other.add_argument("--time_format", help="strptime format of those fields joined by a space, e.g. "
                       "'%%y%%m%%d %%H%%M%%S'. Dated sessions are written as one file per day.")
    other.add_argument("--label_file", help="CSV id,label of session labels (HDFS anomaly_label.csv).")
    other.add_argument("--label_field", help="Header field with a per-line label ('-' = normal; BGL's alert tag).")
    other.add_argument("--structured_csv", help="Also write every line in Loghub's _structured.csv layout here.")
    other.add_argument("--no_progress", action="store_true", help="No progress bar.")
    return parser


def resolve_prepare_settings(args: argparse.Namespace) -> PrepareSettings:
    """Preset values first, then every flag given on the command line."""
    preset = get_preset(args.preset) if args.preset else {}
    if args.mask is None:
        masking = [(pattern, "*") for pattern in preset["masking"]] if preset else \
            [NAMED_MASKS[name] for name in DEFAULT_MASKS]
    else:
        masking = [NAMED_MASKS[name] for name in args.mask if name != "none"]
    masking += [(pattern, "*") for pattern in args.mask_regex]
    drain = DrainSettings(depth=args.depth or preset.get("depth", DEFAULT_DEPTH),
                          sim_th=args.sim_th if args.sim_th is not None else preset.get("sim_th", DEFAULT_SIM_TH),
                          max_children=args.max_children, extra_delimiters=args.extra_delimiters, masking=masking)
    if drain.depth < 3:
        raise PrepareError("--depth must be at least 3")
    if not 0 < drain.sim_th <= 1:
        raise PrepareError("--sim_th must be in (0, 1]")
    given = {name: getattr(args, name) for name in SESSION_FLAGS if getattr(args, name) is not None}
    rule = given or dict(preset.get("session", {}))
    if not rule and args.window_step is None:
        raise PrepareError("no session rule: give --preset, --session_regex, --session_field, --window_size "
                           "or --time_window")
    session = SessionRule(**rule, window_step=args.window_step, inactivity_timeout=args.inactivity_timeout,
                          max_events=args.max_events)
    time = preset.get("time") or {}
    time_fields = args.time_fields or time.get("fields", [])
    time_format = args.time_format or time.get("format")
    if bool(time_fields) != bool(time_format):
        raise PrepareError("--time_fields and --time_format go together")
    return PrepareSettings(inputs=args.input, output_dir=args.output_dir, preset=args.preset,
                           log_format=args.log_format or preset.get("log_format", DEFAULT_LOG_FORMAT),
                           drain=drain, session=session, time_fields=time_fields, time_format=time_format,
                           label_file=args.label_file,
                           label_field=args.label_field or (None if args.label_file else preset.get("label_field")),
                           structured_csv=args.structured_csv, progress=not args.no_progress,
                           background_mining={"auto": None, "yes": True, "no": False}[args.mine_in_background])


def prepare_main(argv: list[str] | None = None) -> int:
    """logbert prepare: raw log files -> session files, templates.csv, parser_state.json, prepare_summary.json."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = build_prepare_parser().parse_args(argv)
    try:
        summary = prepare_logs(resolve_prepare_settings(args))
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    length = summary["session_length"]
    logger.info("%d lines: %d parsed, %d unparsed, %d not UTF-8; %d templates; %d sessions (%s), length "
                "min/mean/max %d/%.1f/%d; written to %s", summary["lines"], summary["parsed"], summary["unparsed"],
                summary["non_utf8_lines"], summary["templates"], summary["sessions"], summary["session_rule"],
                length["min"], length["mean"], length["max"], args.output_dir)
    if summary["unparsed"]:
        logger.warning("%d lines do not fit the log format; first: %s", summary["unparsed"],
                       json.dumps(summary["unparsed_examples"][0]))
    if summary["sessions"] and length["mean"] < MIN_USEFUL_MEAN_SESSION_LENGTH:
        logger.warning("Sessions hold %.1f events on average: too few for the model to learn an order from. Check "
                       "the session rule (%s); a sampled log, such as Loghub's 2k files, has too few lines per "
                       "session to train on.", length["mean"], summary["session_rule"])
    return 0


def build_detect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logbert detect", allow_abbrev=False,
        description="Score raw log lines with a trained model folder (which holds parser_state.json from "
                    "logbert prepare): one JSON line per closed session, with each event's template and line.",
        epilog="Example: tail -F app.log | logbert detect --model out/hdfs --input - --inactivity_timeout 600")
    parser.add_argument("--model", required=True, help="Trained model folder with parser_state.json.")
    parser.add_argument("--input", nargs="+", required=True, help="Raw log files, plain or gzip; - reads stdin.")
    parser.add_argument("--output", default="-", help="Where the JSON lines go (default: standard output).")
    parser.add_argument("--report", help="Also write a short human-readable summary here.")
    parser.add_argument("--threshold", type=float, help="Override the model's calibrated threshold.")
    parser.add_argument("--device", help="cpu, cuda ... Default: a GPU when present.")
    parser.add_argument("--top", type=int, default=10, help="Sessions and templates listed in --report.")
    _add_session_flags(parser, closing_only=True)
    return parser


def detect_main(argv: list[str] | None = None) -> int:
    """logbert detect: raw log lines -> sessions scored when they close -> one JSON line each."""
    from .detect import detect_logs  # loads torch and transformers: only when detecting

    from ..console import configure_logging

    configure_logging()
    args = build_detect_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        counts = detect_logs(args)
    except (PrepareError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed = max(time.perf_counter() - started, 1e-9)
    logger.info("%d lines (%.0f lines/s), %d sessions scored, %d flagged as anomalous, %d lines matched no template",
                counts["lines"], counts["lines"] / elapsed, counts["sessions"], counts["flagged"], counts["unmatched"])
    return 0
