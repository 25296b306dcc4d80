"""Reading raw log lines: files (plain or gzip) or stdin, header parsing by a Loghub log format, timestamps."""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from operator import itemgetter
from typing import IO

CONTENT_FIELD = "Content"
_EPOCH = date(1970, 1, 1)


class PrepareError(ValueError):
    """A problem with the arguments or the input that the user must fix (printed as one `error:` line)."""


def build_format_regex(log_format: str) -> tuple[re.Pattern, list[str]]:
    """The line regex and header names of a Loghub log format such as `<Date> <Time> <Level>: <Content>`.

    The logparser convention: each `<Field>` becomes a lazy named group, runs of spaces match any whitespace, and
    the text between fields is itself a regular expression (so a format may escape `\\[` or hold an optional group).

    Two groups are written in a faster form that matches exactly what the lazy `.*?` would (tested against
    logparser's construction): a field followed only by spaces and then another field is its first run of
    non-whitespace, `\\S*` (the next lazy field could absorb any longer choice, so `.*?` never makes one), and
    the last field runs to the end, `.*`. The lazy group tests the rest of the pattern after every character;
    on BGL's ten fields it cost more than Drain3's own work on the line.
    """
    headers: list[str] = []
    pattern = ""
    pieces = re.split(r"(<[^<>]+>)", log_format)
    for position, piece in enumerate(pieces):
        if position % 2 == 0:
            pattern += re.sub(" +", r"\\s+", piece)
            continue
        header = piece[1:-1]
        if not header.isidentifier():
            raise PrepareError(f"--log_format: field <{header}> must be a name (letters, digits, _)")
        if header in headers:
            raise PrepareError(f"--log_format: field <{header}> appears twice")
        headers.append(header)
        following = pieces[position + 1]
        if position + 2 == len(pieces) and not following:
            pattern += f"(?P<{header}>.*)"
        elif following and not following.strip(" ") and position + 2 < len(pieces):
            pattern += rf"(?P<{header}>\S*)"
        else:
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
_FAST_GROUPS = ("Y", "y", "m", "b", "d", "H", "M", "S", "f")
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
    # Codes the format lacks get an empty group, so that one match.group(*_FAST_GROUPS) call reads them all.
    pattern += "".join(f"(?P<{name}>)" for code, (_, name) in _FAST_CODES.items() if code not in seen)
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
    compiled regex and integer arithmetic instead (with the day number cached), others by strptime. A fraction at
    the end (`.%f`, `,%f`) is split off first, so that the whole seconds are read once for all the lines of a second.
    """

    def __init__(self, fields: list[str], time_format: str):
        self.fields, self.time_format = list(fields), time_format
        self.has_date = any(code in time_format for code in ("%Y", "%y", "%s"))
        if len(self.fields) == 2:  # the common Date + Time: one concatenation, no tuple
            first, second = self.fields
            self._text_of = lambda header: header[first] + " " + header[second]
        else:
            getter = itemgetter(*self.fields)
            self._text_of = getter if len(self.fields) == 1 else lambda header: " ".join(getter(header))
        self._fraction_separator = None
        if len(time_format) > 3 and time_format.endswith("%f") and time_format[-3] in ".,:" \
                and _fast_time_regex(time_format[:-3]) is not None:
            self._fraction_separator = time_format[-3]
            self._fast = _fast_time_regex(time_format[:-3])
        else:
            self._fast = _fast_time_regex(time_format)
        self._days: dict[tuple, int] = {}
        self._last_text: str | None = None
        self._last_value: float | None = None

    def __call__(self, header: dict) -> float | None:
        try:
            text = self._text_of(header)
        except KeyError:
            return None
        fraction = 0.0
        if self._fraction_separator is not None:
            text, separator, digits = text.rpartition(self._fraction_separator)
            if not separator or not 1 <= len(digits) <= 6 or not (digits.isascii() and digits.isdigit()):
                return None
            fraction = int(digits) / 10 ** len(digits)
        if text != self._last_text:  # consecutive lines often share their (whole-second) timestamp
            self._last_text = text
            self._last_value = self._slow(text) if self._fast is None else self._read_fast(text)
        value = self._last_value
        return value if value is None or not fraction else value + fraction

    def _read_fast(self, text: str) -> float | None:
        match = self._fast.match(text)
        if match is None:
            return None
        # match.group(names) and a day cache: groupdict() alone cost more than all the arithmetic here.
        year4, year2, month, month_name, day, hours, minutes, seconds, fraction = match.group(*_FAST_GROUPS)
        key = (year4, year2, month, month_name, day)
        day_number = self._days.get(key)
        if day_number is None:
            year = int(year4) if year4 else 2000 + int(year2) if year2 else 2000
            month_number = int(month) if month else _MONTHS.get(month_name.lower(), 0)
            try:
                day_number = self._days[key] = (date(year, month_number, int(day)) - _EPOCH).days
            except ValueError:
                return None
        hours, minutes, seconds = int(hours), int(minutes), int(seconds)
        if hours > 23 or minutes > 59 or seconds > 61:
            return None
        value = day_number * 86400 + hours * 3600 + minutes * 60 + seconds
        return value + (int(fraction.ljust(6, "0")) / 1e6 if fraction else 0.0)

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
