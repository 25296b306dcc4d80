"""Grouping parsed lines into sessions (by id in the line, header field, line windows or time windows)."""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from .reading import PrepareError, iso_time


@dataclass
class SessionRule:
    """How lines become sessions; exactly one of regex / field / window / time window decides the grouping.

    `inactivity_timeout` (seconds of log time) and `max_events` close a session early; without them a session
    grouped by id stays open until the end of the input.
    """

    session_regex: str | None = None
    session_field: str | None = None
    window_size: int | None = None
    window_step: int | None = None
    time_window: float | None = None
    inactivity_timeout: float | None = None
    max_events: int | None = None

    def __post_init__(self):
        chosen = [name for name in ("session_regex", "session_field", "window_size", "time_window")
                  if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise PrepareError(f"choose one session rule, not {' and '.join('--' + name for name in chosen)}")
        if self.window_step is not None and self.window_size is None:
            raise PrepareError("--window_step needs --window_size")
        if self.window_size is not None and self.window_size < 1:
            raise PrepareError("--window_size must be at least 1")
        if self.window_step is not None and not 1 <= self.window_step <= self.window_size:
            raise PrepareError("--window_step must be between 1 and --window_size")
        if self.time_window is not None and self.time_window <= 0:
            raise PrepareError("--time_window must be positive")
        if self.max_events is not None and self.max_events < 1:
            raise PrepareError("--max_events must be at least 1")
        if self.session_regex is not None:
            try:
                re.compile(self.session_regex)
            except re.error as error:
                raise PrepareError(f"--session_regex {self.session_regex!r} is not valid: {error}") from None

    def describe(self) -> str:
        if self.session_regex:
            return f"--session_regex {self.session_regex!r}"
        if self.session_field:
            return f"--session_field {self.session_field}"
        if self.window_size:
            return f"--window_size {self.window_size} --window_step {self.window_step or self.window_size}"
        if self.time_window:
            return f"--time_window {self.time_window:g}"
        return "one session per input"

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Session:
    """An open or closed session: its events (whatever the caller adds per line) and its time span."""

    session_id: str
    start: float | None = None
    end: float | None = None
    events: list[Any] = field(default_factory=list)
    first_line: int = 0  # orders sessions whose lines have no timestamp

    def summary_times(self) -> dict:
        return {"start_time": iso_time(self.start), "end_time": iso_time(self.end)}


class Sessionizer:
    """Adds each line's event to the sessions it belongs to and returns the sessions that close.

    Memory holds the open sessions only: a session is handed back (and forgotten) when it closes.
    """

    def __init__(self, rule: SessionRule):
        self.rule = rule
        self.open: OrderedDict[str, Session] = OrderedDict()  # least recently active first
        self.regex = re.compile(rule.session_regex) if rule.session_regex else None
        self.line_number = 0  # lines given to add(): counts line windows
        self.lines_without_session = 0
        self.matched_any_line = False
        self.next_window_end = math.inf  # the earliest end of an open time window
        # Read on every line: plain attributes, not a lookup through the rule each time.
        self._idle_timeout, self._max_events = rule.inactivity_timeout, rule.max_events
        self._time_window, self._window_size = rule.time_window, rule.window_size
        self._regex_group = self.regex is not None and self.regex.groups > 1

    def keys_of(self, line: str, header: dict, timestamp: float | None) -> list:
        """The session ids one line belongs to (several when it names several blocks, or windows overlap)."""
        rule = self.rule
        if self.regex is not None:
            if self._regex_group:  # findall would give tuples: the first group names the session
                keys = [m.group(1) for m in self.regex.finditer(line)]
            else:  # the one group, or the whole match
                keys = self.regex.findall(line)
            return list(dict.fromkeys(keys)) if len(keys) > 1 else keys
        if rule.session_field is not None:
            value = header.get(rule.session_field)
            return [value] if value else []
        if rule.window_size is not None:
            size, step, n = rule.window_size, rule.window_step or rule.window_size, self.line_number
            first = max(0, math.ceil((n - size + 1) / step) * step)
            return [f"lines_{start + 1}-{start + size}" for start in range(first, n + 1, step)]
        if rule.time_window is not None:
            if timestamp is None:
                return []
            # The window's start time is the key (named in ISO form only when a session opens: it is slow).
            return [math.floor(timestamp / rule.time_window) * rule.time_window]
        return ["all"]

    def add(self, line: str, header: dict, timestamp: float | None, event: Any) -> list[Session]:
        """Put `event` into the sessions of this line; returns the sessions closed by it (in closing order)."""
        closed = self._close_idle(timestamp) if timestamp is not None and (
            timestamp >= self.next_window_end or self._idle_timeout is not None) else []
        keys = self.keys_of(line, header, timestamp)
        self.line_number += 1
        if not keys:
            self.lines_without_session += 1
            return closed
        self.matched_any_line = True
        open_sessions, max_events = self.open, self._max_events
        for key in keys:
            session = open_sessions.get(key)
            if session is None:
                name = iso_time(key) if self._time_window is not None else key
                session = open_sessions[key] = Session(name, timestamp, timestamp, first_line=self.line_number)
                if self._time_window is not None:
                    self.next_window_end = min(self.next_window_end, key + self._time_window)
            elif self._idle_timeout is not None:  # only idle closing needs the activity order
                open_sessions.move_to_end(key)
            session.events.append(event)
            if timestamp is not None:
                if session.end is None or timestamp > session.end:
                    session.end = timestamp
                if session.start is None or timestamp < session.start:
                    session.start = timestamp
            if max_events is not None and len(session.events) >= max_events:
                closed.append(open_sessions.pop(key))
        if self._window_size is not None:  # the window that started size-1 lines ago is now full
            done = f"lines_{self.line_number - self._window_size + 1}-{self.line_number}"
            if done in self.open:
                closed.append(self.open.pop(done))
        return closed

    def _close_idle(self, now: float) -> list[Session]:
        rule, closed = self.rule, []
        if now >= self.next_window_end:  # a time window closes once log time has passed its end
            for key in [k for k in self.open if now >= k + rule.time_window]:
                closed.append(self.open.pop(key))
            self.next_window_end = min((k + rule.time_window for k in self.open), default=math.inf)
        if rule.inactivity_timeout is not None:
            # Sessions are kept least recently active first, so the idle ones are at the front.
            while self.open:
                session = next(iter(self.open.values()))
                if session.end is None or now - session.end <= rule.inactivity_timeout:
                    break
                closed.append(self.open.popitem(last=False)[1])
        return closed

    def close_all(self) -> list[Session]:
        """The sessions still open at the end of the input, oldest first."""
        closed = sorted(self.open.values(), key=lambda s: s.first_line)
        self.open.clear()
        return closed
