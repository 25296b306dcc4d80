"""Finding the input files: files, globs and directories -> a sorted list of training and validation files."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .records import DataError

if TYPE_CHECKING:  # config imports transformers and torch: seconds that every spawned parsing worker would pay
    from ..config import DataArguments

logger = logging.getLogger(__name__)

# Files that `logbert prepare` (and a run's quarantine) write beside session files, never sessions themselves:
# `--data-dir` skips them, so a prepared folder trains as it is.
NOT_SESSION_FILES = frozenset({"parser_state.json", "prepare_summary.json", "rejected_records.jsonl"})


def expand_data_files(patterns: Iterable[str], what: str) -> list[str]:
    """Expand files, globs and directories into a sorted list of files; a pattern matching nothing is an error."""
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            matches = sorted(p for p in glob.glob(os.path.join(pattern, "*")) if os.path.isfile(p))
        else:
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not matches:
            raise DataError(f"{what} {pattern}: no such file (or no file matches the pattern)")
        files.extend(matches)
    # Name order is time order for daily files such as preprocessed_logs_2025-02-24.json.
    return sorted(dict.fromkeys(os.path.abspath(f) for f in files))


def expand_inputs(patterns: list[str] | None, what: str) -> list[str]:
    """Files in the order the user named them (each glob sorted), so output rows follow the input."""
    files = [path for pattern in patterns or [] for path in expand_data_files([pattern], what)]
    return list(dict.fromkeys(files))


def resolve_data_files(data_args: DataArguments) -> tuple[list[str], list[str]]:
    """The training and validation files the arguments name. No data flag at all means the bundled sample."""
    from ..config import SAMPLE_TRAIN_FILE
    if data_args.train_file:
        train = expand_data_files(data_args.train_file, "--train_file")
    elif data_args.data_dir:
        if not os.path.isdir(data_args.data_dir):
            raise DataError(f"--data-dir {data_args.data_dir}: no such directory")
        train = sorted(
            {
                os.path.abspath(p)
                for pattern in data_args.file_pattern
                for p in glob.glob(os.path.join(data_args.data_dir, "**", pattern), recursive=True)
                if os.path.isfile(p) and os.path.basename(p) not in NOT_SESSION_FILES
            }
        )
        if not train:
            raise DataError(
                f"--data-dir {data_args.data_dir}: no file matches --file_pattern {' '.join(data_args.file_pattern)}"
            )
    else:
        logger.info("No data given: training on the bundled HDFS sample %s", SAMPLE_TRAIN_FILE)
        train = [str(SAMPLE_TRAIN_FILE)]
    validation = expand_data_files(data_args.validation_file, "--validation_file") if data_args.validation_file else []
    overlap = set(train) & set(validation)
    if overlap:
        raise DataError(f"these files are both training and validation files: {', '.join(sorted(overlap))}")
    return train, validation
