"""Template mining with Drain3, and the parser state as plain JSON (saved with the data, rebuilt for matching)."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from ..model_files import PARSER_STATE_FILE
from .reading import PrepareError

PARSER_STATE_VERSION = 1
UNMATCHED_EVENT = "[UNK]"  # the tokenizer's unknown token: a line no saved template matches


@dataclass
class DrainSettings:
    """Drain3 settings and masks; `masking` holds (regex, mask name) pairs, a mask name "*" making a parameter."""

    depth: int = 4
    sim_th: float = 0.4
    max_children: int = 100
    extra_delimiters: list[str] = field(default_factory=list)
    parametrize_numeric_tokens: bool = True
    masking: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"depth": self.depth, "sim_th": self.sim_th, "max_children": self.max_children,
                "extra_delimiters": list(self.extra_delimiters),
                "parametrize_numeric_tokens": self.parametrize_numeric_tokens,
                "masking": [{"regex_pattern": p, "mask_with": m} for p, m in self.masking]}

    @classmethod
    def from_json(cls, data: dict) -> DrainSettings:
        return cls(depth=int(data["depth"]), sim_th=float(data["sim_th"]), max_children=int(data["max_children"]),
                   extra_delimiters=list(data.get("extra_delimiters", [])),
                   parametrize_numeric_tokens=bool(data.get("parametrize_numeric_tokens", True)),
                   masking=[(m["regex_pattern"], m["mask_with"]) for m in data.get("masking", [])])


def build_template_miner(settings: DrainSettings) -> TemplateMiner:
    """A Drain3 TemplateMiner configured in code (no drain3.ini, no persistence)."""
    config = TemplateMinerConfig()
    config.drain_depth, config.drain_sim_th = settings.depth, settings.sim_th
    config.drain_max_children = settings.max_children
    # No max_clusters: Drain3 would then evict clusters (LRU), and a line's cluster id could vanish before the end.
    config.drain_max_clusters = None
    config.drain_extra_delimiters = list(settings.extra_delimiters)
    config.parametrize_numeric_tokens = settings.parametrize_numeric_tokens
    try:
        config.masking_instructions = [MaskingInstruction(p, m) for p, m in settings.masking]
    except re.error as error:  # a bad --mask_regex
        raise PrepareError(f"masking regex is not valid: {error}") from None
    return TemplateMiner(persistence_handler=None, config=config)


def event_id_of(cluster_id: int) -> str:
    """Drain3 numbers clusters 1, 2, ... as they are created, i.e. by first appearance, and never merges or
    renumbers them (only a cluster's template text generalises): so E<cluster id> is a stable event id."""
    return f"E{cluster_id}"


def write_parser_state(path: str, state: dict, templates: list[tuple[int, str, int]]) -> None:
    """`state` (log format, time, session rule ...) plus the final templates (cluster id, text, occurrences), as
    plain JSON."""
    document = {"format_version": PARSER_STATE_VERSION, **state,
                "templates": [{"event_id": event_id_of(cluster_id), "template": template, "occurrences": count}
                              for cluster_id, template, count in templates]}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
    os.replace(tmp, path)


class TemplateMatcher:
    """Saved templates matched to new log contents; matching never changes a template.

    Built from plain JSON (no pickle, no jsonpickle): Drain3 masks and splits the content as in mining, then the
    line takes the most specific template that fits it, every non-parameter token equal. Drain3's own `match`
    breaks ties towards *more* parameters, which sent a line of Loghub's HDFS and BGL samples to a more general
    template than the one it was mined into; the most specific one reproduces mining's choice.
    """

    def __init__(self, state: dict):
        self.state = state
        self.settings = DrainSettings.from_json(state["drain"])
        self.miner = build_template_miner(self.settings)
        param = self.miner.drain.param_str
        self.templates: dict[str, str] = {}
        # token count -> [(parameter count, -occurrences, event id, tokens)]: most specific first, then (when
        # Drain made two equally specific templates that both fit) the more frequent one
        self.by_length: dict[int, list[tuple[int, int, str, tuple]]] = {}
        for template in state["templates"]:
            tokens = tuple(self.miner.drain.get_content_as_tokens(template["template"]))
            self.templates[template["event_id"]] = template["template"]
            self.by_length.setdefault(len(tokens), []).append(
                (sum(token == param for token in tokens), -template.get("occurrences", 0), template["event_id"],
                 tokens))
        for candidates in self.by_length.values():
            candidates.sort(key=lambda candidate: candidate[:2])
        self.param = param

    def match(self, content: str) -> str | None:
        """The event id of the most specific saved template `content` fits, or None."""
        tokens = self.miner.drain.get_content_as_tokens(self.miner.masker.mask(content))
        param = self.param
        for _, _, event_id, template in self.by_length.get(len(tokens), ()):
            if all(t == param or t == token for t, token in zip(template, tokens)):
                return event_id
        return None


def load_parser(path: str) -> TemplateMatcher:
    """The matcher saved in `path` (a parser_state.json, or a folder holding one).

    Raises:
        FileNotFoundError: no parser state there. PrepareError: the file is not a parser state this version reads.
    """
    if os.path.isdir(path):
        path = os.path.join(path, PARSER_STATE_FILE)
    with open(path, encoding="utf-8") as handle:
        try:
            state = json.load(handle)
        except json.JSONDecodeError as error:
            raise PrepareError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(state, dict) or state.get("format_version") != PARSER_STATE_VERSION:
        raise PrepareError(f"{path}: not a parser state of format_version {PARSER_STATE_VERSION}")
    missing = [key for key in ("log_format", "drain", "session", "templates") if key not in state]
    if missing:
        raise PrepareError(f"{path}: parser state lacks {', '.join(missing)}")
    return TemplateMatcher(state)


def copy_parser_state(data_dir: str, model_dir: str) -> str | None:
    """Copy `data_dir`/parser_state.json into `model_dir` (training calls this), so the model folder is all that
    `logbert detect` needs. Returns the new path, or None when the data was not made by `logbert prepare`."""
    source = os.path.join(data_dir, PARSER_STATE_FILE)
    if not os.path.isfile(source):
        return None
    load_parser(source)  # refuse to ship a state that could not be read back
    os.makedirs(model_dir, exist_ok=True)
    target = os.path.join(model_dir, PARSER_STATE_FILE)
    shutil.copyfile(source, target)
    return target


def find_parser_state(data_dir: str | None, train_files: list[str]) -> str | None:
    """The folder holding `logbert prepare`'s parser_state.json for this training data, or None (not prepared)."""
    folders = [data_dir] if data_dir else sorted({os.path.dirname(os.path.abspath(path)) for path in train_files})
    return next((folder for folder in folders if os.path.isfile(os.path.join(folder, PARSER_STATE_FILE))), None)
