"""Raw logs -> Drain3 templates -> sessions of event ids (`logbert prepare`), and detection on raw logs."""

from .cli import detect_main, prepare_main
from .reading import PrepareError, build_format_regex
from .run import PrepareSettings, prepare_logs
from .sessions import SessionRule, Sessionizer
from .templates import TemplateMatcher, copy_parser_state, load_parser

__all__ = ["PrepareError", "PrepareSettings", "SessionRule", "Sessionizer", "TemplateMatcher", "build_format_regex",
           "copy_parser_state", "detect_main", "load_parser", "prepare_logs", "prepare_main"]
