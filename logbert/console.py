"""What a user sees on the terminal: progress, the few facts that matter and one line per problem; the rest in a file.

transformers, datasets and accelerate log a great deal at info level (whole model configs, offline-mode notices,
"share your model" reminders). Those lines go to the log file only; the terminal gets their warnings, and our own
info lines. `--log_level info` (or debug) brings everything back to the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path

# Loggers of ours: their info lines are what the user came for.
OWN_LOGGERS = ("logbert", "run_mlm_logs", "__main__")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Repeated by libraries on every call and carrying nothing to act on.
QUIET_MESSAGES = ("Do not forget to share your model", "Offline mode", "offline mode")


class _TerminalFilter(logging.Filter):
    """Our info lines and everyone's warnings; a library's info lines only when asked for."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        if record.name.endswith(".details"):  # long dumps (the resolved config): the log file only
            return False
        own = record.name.split(".")[0] in OWN_LOGGERS
        if not own and record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        return not any(quiet in message for quiet in QUIET_MESSAGES)


def configure_logging(verbose: bool = False, level: int = logging.INFO) -> None:
    """Terminal logging for a command: our info lines, the libraries' warnings, nothing printed twice."""
    import datasets
    import transformers

    # Their records go through the root logger's handlers (ours) instead of a second handler of their own.
    transformers.utils.logging.disable_default_handler()
    logging.getLogger("datasets").handlers.clear()  # datasets has no disable_default_handler
    for library in (transformers.utils.logging, datasets.utils.logging):
        library.enable_propagation()
        library.set_verbosity(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # "Loading weights" bars on every model load; training and scoring keep their own bars
        transformers.utils.logging.disable_progress_bar()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_logbert", False):
            root.removeHandler(handler)
    terminal = logging.StreamHandler(sys.stdout)
    terminal.setFormatter(logging.Formatter(LOG_FORMAT))
    terminal.addFilter(_TerminalFilter(verbose))
    terminal.setLevel(level)
    terminal._logbert = True
    root.addHandler(terminal)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # Python warnings become log records: one format, filtered like the rest
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def log_to_file(path: str | Path) -> Path:
    """Also write every record, the libraries' info lines included, to `path` (the full log of a run)."""
    import datasets
    import transformers

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._logbert = True
    logging.getLogger().addHandler(handler)
    # The file wants the libraries' info lines; the terminal filter still keeps them off the screen.
    transformers.utils.logging.set_verbosity_info()
    datasets.utils.logging.set_verbosity_info()
    return path


def print_error(error: BaseException | str) -> None:
    """One line on stderr, on a line of its own even when a progress bar was drawing."""
    sys.stdout.flush()
    print(f"\nerror: {error}" if _progress_bar_open() else f"error: {error}", file=sys.stderr, flush=True)
    logging.getLogger("logbert").debug("error: %s", error)


def _progress_bar_open() -> bool:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return False
    return any(not getattr(bar, "disable", False) for bar in list(getattr(tqdm, "_instances", [])))


@contextlib.contextmanager
def warnings_said_once(*logger_names: str):
    """Within the block, these loggers report errors only: for a step repeated on a second model folder, whose
    warnings would repeat the first one's word for word."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)
