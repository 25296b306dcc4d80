"""Parsing a run's arguments: `--config` YAML sets defaults, command-line flags win, unknown keys fail.

The argument dataclasses themselves are in `logbert.arguments`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

if TYPE_CHECKING:
    from .arguments import DataArguments, LogBertTrainingArguments, ModelArguments, ScoringArguments

# The argument dataclasses import TrainingArguments, and so torch (seconds): loaded when a parser is built, so that
# ConfigError and the flag-typo message cost nothing to the commands that only need those.
_ARGUMENT_NAMES = ("ALL_ARGUMENT_CLASSES", "DataArguments", "LogBertTrainingArguments", "ModelArguments",
                   "ReferenceArguments", "ScoringArguments")


def __getattr__(name: str):
    if name in _ARGUMENT_NAMES:  # re-exported: `from logbert.config import DataArguments` keeps working
        from . import arguments

        return getattr(arguments, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

logger = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"
# The embedded default corpus: real HDFS sessions (DeepLog split), see sample_data/README.md.
SAMPLE_TRAIN_FILE = SAMPLE_DATA_DIR / "hdfs_train.txt"
YAML_SECTIONS = ("model", "data", "training", "scoring")


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names the key and the file."""




def build_parser(prog: str | None = None) -> HfArgumentParser:
    # allow_abbrev=False: `--max_step 10` must not silently mean --max_steps (or, one day, another flag).
    from .arguments import ALL_ARGUMENT_CLASSES

    parser = HfArgumentParser(ALL_ARGUMENT_CLASSES, prog=prog, allow_abbrev=False,
                              description="Train LogBERT on log sessions. Every flag can also be a key of --config.")
    parser.add_argument("--config", default=None,
                        help="YAML file with `model:`, `data:`, `training:`, `scoring:` sections; flags win over it.")
    for action in parser._actions:  # argparse %-formats help texts: a literal "85%" would crash --help
        if action.help and "%" in action.help and "%(" not in action.help:
            action.help = action.help.replace("%", "%%")
    return parser


def unknown_flags_error(unknown: list[str], parser: argparse.ArgumentParser) -> ConfigError:
    """One line naming the unknown flags, with the closest known flag for each typo."""
    known = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    parts = []
    for token in unknown:
        flag = token.split("=", 1)[0]
        if not flag.startswith("-"):  # the value of an unknown flag, or a stray word
            if not parts:
                parts.append(f"unexpected value {token!r}")
            continue
        close = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1),
                                          [k.replace("-", "_").replace("__", "--", 1) for k in known], n=1)
        parts.append(f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    return ConfigError("; ".join(parts) + ". See --help.")


def _expected_type_name(action: argparse.Action) -> str:
    if action.choices:
        return "one of " + ", ".join(map(str, action.choices))
    kind = getattr(action.type, "__name__", str(action.type))
    return {"string_to_bool": "true or false", "make_choice_type_function": "a choice"}.get(kind, kind)


def _convert_yaml_value(action: argparse.Action, value: Any, where: str) -> Any:
    """Convert a YAML value with the same type the command-line flag uses; raise ConfigError naming `where`."""
    if value is None:
        return None

    def convert_one(item: Any) -> Any:
        if action.type is None:
            return item
        if action.type is int and isinstance(item, float) and not item.is_integer():
            raise ValueError
        if action.type is int and isinstance(item, bool):
            raise ValueError
        if action.type is string_to_bool and not isinstance(item, (bool, str, int)):
            raise ValueError
        # PyYAML reads `2e-5` as a string (YAML 1.1 needs a dot): parsing it as the flag would is the fix.
        converted = action.type(item if isinstance(item, (str, bool)) else str(item))
        if action.choices and converted not in action.choices:
            raise ValueError
        return converted

    try:
        if action.nargs == "+":
            items = value if isinstance(value, list) else [value]
            return [convert_one(item) for item in items]
        if isinstance(value, (list, dict)):
            raise ValueError
        return convert_one(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ConfigError(f"{where}: expected {_expected_type_name(action)}, got {value!r}") from None


def load_yaml_config(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read `--config` into {dest: value}, checking every key against the known flags.

    Sections `model:`, `data:`, `training:` are read alike (a key may sit in any of them, as in the reference
    `training_config.yaml`); top-level keys are accepted too. An unknown key or a value of the wrong type is a
    ConfigError naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(YAML_SECTIONS)}")

    flat: dict[str, tuple[Any, str]] = {}
    for key, value in raw.items():
        if key in YAML_SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: section '{key}' must be a mapping of settings")
            entries = [(f"{key}.{sub}", sub, sub_value) for sub, sub_value in value.items()]
        else:
            entries = [(str(key), key, value)]
        for where, name, item in entries:
            if name in flat:
                raise ConfigError(f"{path}: key '{name}' is set twice ({flat[name][1]} and {where})")
            flat[name] = (item, where)

    # A default-true boolean also has a `--no_<name>` twin with the same dest and no type: take the flag itself.
    known = {
        action.dest: action for action in parser._actions
        if action.dest not in ("help", "config")
        and not all(option.startswith(("--no_", "--no-")) for option in action.option_strings)
    }
    values = {}
    for name, (value, where) in flat.items():
        action = known.get(str(name).replace("-", "_"))
        if action is None:
            raise ConfigError(
                f"{path}: unknown key '{where}'. Every key must be a flag of run_mlm_logs.py "
                f"(see `python run_mlm_logs.py --help`)."
            )
        values[action.dest] = _convert_yaml_value(action, value, f"{path}: '{where}'")
    return values


def _flags_on_command_line(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """The destinations the user typed, so that they win over YAML and reference aliases."""
    given = set()
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                given.add(action.dest)
    return given


# reference key -> (Hugging Face destinations it sets)
REFERENCE_ALIASES = {
    "batch_size": ("per_device_train_batch_size", "per_device_eval_batch_size"),
    "num_epochs": ("num_train_epochs",),
    "mask_prob": ("mlm_probability",),
    "num_workers": ("dataloader_num_workers",),
}


def _resolve_reference_keys(namespace: argparse.Namespace, cli: set[str], yaml_keys: set[str]) -> None:
    """Map the reference config's keys onto Hugging Face's. Precedence: CLI flag > alias > YAML > default."""
    for alias, targets in REFERENCE_ALIASES.items():
        value = getattr(namespace, alias)
        if value is None:
            continue
        for target in targets:
            if target in cli:  # the specific flag typed on the command line always wins
                continue
            if target in yaml_keys and alias in yaml_keys and getattr(namespace, target) != value:
                raise ConfigError(f"the config sets both '{alias}' and '{target}': keep one")
            setattr(namespace, target, value)

    precision = namespace.mixed_precision
    if {"fp16", "bf16"} & (cli | yaml_keys):  # the Hugging Face flags, when given, are the user's word
        return
    if precision is None:  # nothing said: bf16 where the GPU supports it, else fp16 on a GPU, fp32 on a CPU
        precision = "auto"
    if precision == "auto":
        precision = _best_precision()
    elif precision in ("fp16", "bf16") and not _cuda_available():
        logger.warning("mixed_precision=%s needs a GPU; training in fp32 on this machine.", precision)
        precision = "no"
    namespace.fp16 = precision == "fp16"
    namespace.bf16 = precision == "bf16"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _best_precision() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class ParsedArguments(NamedTuple):
    model: ModelArguments
    data: DataArguments
    training: LogBertTrainingArguments
    scoring: ScoringArguments
    config_path: str | None


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> ParsedArguments:
    """Parse `--config` (defaults) and the command line (wins) into the argument dataclasses.

    Returns:
        (ModelArguments, DataArguments, LogBertTrainingArguments, ScoringArguments, config_path or None)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    known, _ = pre_parser.parse_known_args(argv)

    yaml_values = load_yaml_config(known.config, parser) if known.config else {}
    parser.set_defaults(**yaml_values)
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_flags_error(unknown, parser)
    cli = _flags_on_command_line(argv, parser)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not namespace.use_cpu and not _cuda_available():
        # Several processes (torchrun / `accelerate launch --multi_gpu`) and no GPU: DDP over gloo on CPUs.
        namespace.use_cpu = True
    _resolve_reference_keys(namespace, cli, set(yaml_values))
    if "dataloader_pin_memory" not in cli | set(yaml_values) and not _cuda_available():
        namespace.dataloader_pin_memory = False  # pinning needs a GPU; torch warns on every dataloader otherwise
    if ("do_eval" in cli or "do_eval" in yaml_values) and not namespace.do_eval:
        # TrainingArguments turns do_eval back on whenever eval_strategy is not "no": --do_eval false means no eval.
        namespace.eval_strategy = "no"
    if namespace.use_multi_gpu:
        logger.info("use_multi_gpu is set: start with `accelerate launch --multi_gpu ...` to use several GPUs.")

    instances = []
    from .arguments import ALL_ARGUMENT_CLASSES
    from .scoring import END_SLOT_SCORES

    for dataclass_type in ALL_ARGUMENT_CLASSES:
        names = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
        kwargs = {name: getattr(namespace, name) for name in names}
        try:
            instances.append(dataclass_type(**kwargs))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    model_args, data_args, _, training_args, scoring_args = instances

    if data_args.max_seq_length is None:
        data_args.max_seq_length = model_args.max_position_embeddings
    if data_args.max_seq_length > model_args.max_position_embeddings:
        raise ConfigError(
            f"--max_seq_length ({data_args.max_seq_length}) exceeds --max_position_embeddings "
            f"({model_args.max_position_embeddings})."
        )
    if data_args.end_of_session_probability == 0 and scoring_args.score_name in END_SLOT_SCORES:
        if "score_name" in cli or "score_name" in yaml_values:
            raise ConfigError(f"--score_name {scoring_args.score_name} needs the end slot: set "
                              "--end_of_session_probability above 0, or pick max_nll, mean_nll or miss_ratio.")
        logger.info("end_of_session_probability is 0 (no end slot): scoring with max_nll.")
        scoring_args.score_name = "max_nll"
    return ParsedArguments(model_args, data_args, training_args, scoring_args, known.config)


def resolved_config(model_args, data_args, training_args, scoring_args=None) -> dict[str, dict[str, Any]]:
    """The effective settings as a YAML-ready dict in the `--config` layout, saved beside every exported model.

    Reusable as `--config`: only keys that are flags, with values their flags accept, are written (a value that
    TrainingArguments derives, such as its AcceleratorConfig object, is left for it to derive again).
    """
    flags = {action.dest for action in build_parser()._actions}

    def plain(value):
        if hasattr(value, "value"):  # enums
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, float) and math.isinf(value):
            return None
        return value if isinstance(value, (str, int, float, bool, type(None))) else _NOT_A_FLAG_VALUE

    def representable(value) -> bool:
        return value is not _NOT_A_FLAG_VALUE and not (isinstance(value, list) and _NOT_A_FLAG_VALUE in value)

    # Defaults read off the dataclass fields: building a second TrainingArguments would reset the shared
    # accelerate state, and a distributed run would silently fall back to one process.
    def default_of(f: dataclasses.Field):
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else None

    def section(arguments, keep) -> dict[str, Any]:
        values = {f.name: plain(getattr(arguments, f.name)) for f in dataclasses.fields(arguments)
                  if f.init and f.name in flags and f.name not in NOT_SAVED and keep(f)}
        return {name: value for name, value in values.items() if representable(value)}

    training = section(training_args, lambda f: plain(getattr(training_args, f.name)) != plain(default_of(f))
                       or f.name in ALWAYS_SAVED)
    sections = {"model": section(model_args, lambda f: True), "data": section(data_args, lambda f: True),
                "training": training}
    if scoring_args is not None:
        sections["scoring"] = section(scoring_args, lambda f: True)
    return sections


# Never written to the saved config: a secret, and how one invocation started (not part of the recipe).
NOT_SAVED = {"hub_token", "resume_from_checkpoint", "overwrite_output_dir", "config"}
# Written even at their defaults: what a reader of the saved config looks for first.
ALWAYS_SAVED = {"per_device_train_batch_size", "learning_rate", "num_train_epochs", "lr_scheduler_type",
                "weight_decay", "max_grad_norm", "gradient_accumulation_steps", "seed", "fp16", "bf16"}
_NOT_A_FLAG_VALUE = object()
