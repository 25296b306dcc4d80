"""Reading raw log lines: files (plain or gzip) or stdin, header parsing by a Loghub log format, timestamps."""

from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from collections.abc import Iterable, Iterator
from typing import IO

CONTENT_FIELD = "Content"
_EPOCH = date(1970, 1, 1)


class PrepareError(ValueError):
    """A problem with the arguments or the input that the user must fix (printed as one `error:` line)."""


def build_format_regex(log_format: str) -> tuple[re.Pattern, list[str]]:
    """The line regex and header names of a Loghub log format such as `<Date> <Time> <Level>: <Content>`.

    The logparser convention: each `<Field>` becomes a lazy named group, runs of spaces match any whitespace, and
    the text between fields is itself a regular expression (so a format may escape `\\[` or hold an optional group).
    """
    headers: list[str] = []
    pattern = ""
    for position, piece in enumerate(re.split(r"(<[^<>]+>)", log_format)):
        if position % 2 == 0:
            pattern += re.sub(" +", r"\\s+", piece)
        else:
            header = piece[1:-1]
            if not header.isidentifier():
                raise PrepareError(f"--log_format: field <{header}> must be a name (letters, digits, _)")
            if header in headers:
                raise PrepareError(f"--log_format: field <{header}> appears twice")
            headers.append(header)
            pattern += f"(?P<{header}>.*?)"
    if CONTENT_FIELD not in headers:
        raise PrepareError(f"--log_format {log_format!r} has no <Content> field: templates are mined from it")
    try:
        return re.compile("^" + pattern + "$"), headers
    except re.error as error:
        raise PrepareError(f"--log_format {log_format!r} is not a valid pattern: {error}") from None


@dataclass
class ReadStats:
    """What reading saw: counts for the summary, and the first unparsed lines as examples."""

    lines: int = 0
    parsed: int = 0
    unparsed: int = 0
    non_utf8: int = 0
    no_timestamp: int = 0
    unparsed_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"lines": self.lines, "parsed": self.parsed, "unparsed": self.unparsed,
                "unparsed_examples": self.unparsed_examples, "non_utf8_lines": self.non_utf8,
                "lines_without_timestamp": self.no_timestamp}


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def iter_raw_lines(paths: Iterable[str], stats: ReadStats) -> Iterator[str]:
    """Every non-blank line of `paths` in order, decoded as UTF-8; undecodable bytes become U+FFFD and are counted.

    Streams: one line in memory at a time. "-" reads standard input (lines are yielded as they arrive).
    """
    for path in paths:
        try:
            handle = _open_binary(path)
        except OSError as error:
            raise PrepareError(f"--input {path}: {error.strerror or error}") from None
        try:
            for raw in handle:
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    stats.non_utf8 += 1
                stats.lines += 1
                yield text
        finally:
            if handle is not sys.stdin.buffer:
                handle.close()


# strptime codes the fast path reads itself: (regex, name). Other formats go through datetime.strptime.
_FAST_CODES = {"%Y": (r"(?P<Y>\d{4})", "Y"), "%y": (r"(?P<y>\d{2})", "y"), "%m": (r"(?P<m>\d{1,2})", "m"),
               "%d": (r"(?P<d>\d{1,2})", "d"), "%H": (r"(?P<H>\d{1,2})", "H"), "%M": (r"(?P<M>\d{1,2})", "M"),
               "%S": (r"(?P<S>\d{1,2})", "S"), "%f": (r"(?P<f>\d{1,6})", "f"), "%b": (r"(?P<b>[A-Za-z]{3})", "b")}
_MONTHS = {name: number for number, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}


def _fast_time_regex(time_format: str) -> re.Pattern | None:
    """A regex reading `time_format` when it uses only the codes above, each once; else None."""
    pieces = re.split(r"(%.)", time_format)
    pattern, seen = "", set()
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            pattern += re.escape(piece)
        elif piece in _FAST_CODES and piece not in seen:
            seen.add(piece)
            pattern += _FAST_CODES[piece][0]
        else:
            return None
    if not {"%d", "%H", "%M", "%S"} <= seen or not seen & {"%m", "%b"}:
        return None
    return re.compile(pattern + "$")


MAX_UNPARSED_EXAMPLES = 5


def iter_parsed_lines(paths: Iterable[str], regex: re.Pattern, stats: ReadStats) -> Iterator[tuple[str, dict]]:
    """(line, header fields) for every line that fits the log format; the others are counted, and the first
    MAX_UNPARSED_EXAMPLES kept as examples, in `stats` (never dropped without a trace)."""
    for line in iter_raw_lines(paths, stats):
        match = regex.match(line.strip())
        if match is None:
            stats.unparsed += 1
            if len(stats.unparsed_examples) < MAX_UNPARSED_EXAMPLES:
                stats.unparsed_examples.append(line[:500])
            continue
        stats.parsed += 1
        yield line, match.groupdict()


class TimestampParser:
    """Header fields -> POSIX seconds (UTC), by a strptime format; None when the fields do not parse.

    datetime.strptime costs several microseconds a line, as much as Drain3's own work; common formats are read by a
    compiled regex and integer arithmetic instead (with the day number cached), others by strptime.
    """

    def __init__(self, fields: list[str], time_format: str):
        self.fields, self.time_format = list(fields), time_format
        self.has_date = any(code in time_format for code in ("%Y", "%y", "%s"))
        self._fast = _fast_time_regex(time_format)
        self._days: dict[tuple, int] = {}
        self._last_text: str | None = None
        self._last_value: float | None = None

    def __call__(self, header: dict) -> float | None:
        try:
            text = header[self.fields[0]] if len(self.fields) == 1 else " ".join(header[f] for f in self.fields)
        except KeyError:
            return None
        if text == self._last_text:  # consecutive lines often share their timestamp
            return self._last_value
        self._last_text = text
        self._last_value = value = self._slow(text) if self._fast is None else self._read_fast(text)
        return value

    def _read_fast(self, text: str) -> float | None:
        match = self._fast.match(text)
        if match is None:
            return None
        parts = match.groupdict()
        year = int(parts["Y"]) if "Y" in parts else 2000 + int(parts["y"]) if "y" in parts else 2000
        month = int(parts["m"]) if "m" in parts else _MONTHS.get(parts["b"].lower(), 0)
        key = (year, month, parts["d"])
        day = self._days.get(key)
        if day is None:
            try:
                day = self._days[key] = (date(year, month, int(parts["d"])) - _EPOCH).days
            except ValueError:
                return None
        hours, minutes, seconds = int(parts["H"]), int(parts["M"]), int(parts["S"])
        if hours > 23 or minutes > 59 or seconds > 61:
            return None
        fraction = int(parts["f"].ljust(6, "0")) / 1e6 if parts.get("f") else 0.0
        return day * 86400 + hours * 3600 + minutes * 60 + seconds + fraction

    def _slow(self, text: str) -> float | None:
        try:
            if self.has_date:
                stamp = datetime.strptime(text, self.time_format)
            else:  # a format without a year (syslog): a leap year, so that Feb 29 parses
                stamp = datetime.strptime("2000 " + text, "%Y " + self.time_format)
        except ValueError:
            return None
        return stamp.replace(tzinfo=timezone.utc).timestamp()


def iso_time(seconds: float | None) -> str | None:
    """POSIX seconds as an ISO-8601 UTC string (None stays None)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")
