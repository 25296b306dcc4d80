"""`logbert`: one command with subcommands, the way `accelerate`, `trl` and `hf` work.

    logbert train --config configs/hdfs.yaml --train_file FILE --output_dir OUT
    logbert score --model OUT --input sessions.jsonl
    logbert <command> --help

Each subcommand is imported only when it runs, so `logbert --help` and input errors answer at once instead of
after torch and transformers have loaded.
"""

from __future__ import annotations

import difflib
import importlib
import sys

# name -> (module, function taking argv and returning an exit code, one line for `logbert --help`)
COMMANDS = {
    "prepare": ("logbert.prepare.cli", "prepare_main", "raw log files -> templates (Drain3) -> session files"),
    "train": ("run_mlm_logs", "cli", "train a LogBERT model on session files (same flags as run_mlm_logs.py)"),
    "score": ("logbert.cli", "score_main", "score session files with a trained model, one JSON line per session"),
    "detect": ("logbert.prepare.cli", "detect_main", "raw log lines -> sessions -> alerts, with a model folder"),
    "evaluate": ("logbert.cli", "evaluate_main", "detection metrics and plots on labelled sessions, with a baseline"),
    "calibrate": ("logbert.cli", "calibrate_main", "set a model's anomaly threshold from normal (or dev) sessions"),
    "push": ("logbert.cli", "push_main", "upload a trained model folder to the Hugging Face hub"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    return ("usage: logbert <command> [--help] [flags]\n\nLogBERT log anomaly detection: train on normal log "
            "sessions, flag sessions the model cannot predict.\n\ncommands:\n" + "\n".join(lines) +
            "\n\nRun `logbert <command> --help` for a command's flags.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean `logbert {close[0]}`?)" if close else ""
        print(f"error: unknown command {name!r}{hint}. Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        print(f"error: `logbert {name}` is not available in this installation ({error}).", file=sys.stderr)
        return 2
    sys.argv[0] = f"logbert {name}"  # what argparse shows as the program name in usage lines
    return getattr(module, function_name)(rest)


if __name__ == "__main__":
    sys.exit(main())
