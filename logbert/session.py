"""What a session is: the one place that turns a record into a validated `Session` (training and scoring alike).

This module is shipped beside `pipeline.py` as remote code next to saved models, so it imports only the standard
library. Training (`logbert.ingest`) and scoring both validate through `normalize_session`, so a session that
training rejects is rejected by scoring with the same message.

A session is given as one of:
- a dict (a JSON record): `token_ids` (+ optional `attention_mask`), or `event_sequence` / `event_ids` (a list of
  event IDs, or one whitespace-separated string of them); optional `session_id` (or `block_id`, `BlockId`, `id`)
  and `label` (or `is_anomaly`: 0/1, true/false, normal/anomaly);
- a tuple or list of event IDs (integers or non-blank strings without whitespace);
- a string of whitespace-separated event IDs (one line of the event-ID text format).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The frame and special tokens, and the seed's token-id convention (BERT's uncased vocabulary) for data that
# carries `token_ids`. [CLS], [SEP] and [PAD] frame a session: they are never events.
PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
FRAME_TOKENS = frozenset({CLS_TOKEN, SEP_TOKEN, PAD_TOKEN})
SEED_SPECIAL_IDS = {PAD_TOKEN: 0, UNK_TOKEN: 100, CLS_TOKEN: 101, SEP_TOKEN: 102, MASK_TOKEN: 103}
FRAME_TOKEN_IDS = frozenset(SEED_SPECIAL_IDS[token] for token in FRAME_TOKENS)
SPECIAL_TOKEN_IDS = frozenset(SEED_SPECIAL_IDS.values())  # a session of these only has no event

TOKEN_IDS_KIND = "token_ids"
EVENTS_KIND = "events"
SESSION_ID_KEYS = ("session_id", "block_id", "BlockId", "id")
LABEL_NAMES = {"normal": 0, "anomaly": 1, "anomalous": 1, "abnormal": 1}
_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1


class SessionError(ValueError):
    """A record that is not a valid session. `reason` says what was expected; the message also says where."""

    def __init__(self, reason: str, where: str | None = None):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a third of the per-record time of the slow path
class Session:
    """One validated session.

    `kind` is TOKEN_IDS_KIND (then `token_ids` holds the real token ids, padding stripped, [CLS]/[SEP] kept as
    given) or EVENTS_KIND (then `events` holds the event IDs as strings). `session_id` is "" when the record has
    none; `label` is 0 (normal), 1 (anomaly) or -1 (unknown).
    """

    kind: str
    events: list[str] | None = None
    token_ids: list[int] | None = None
    session_id: str = ""
    label: int = -1


def session_kind(record: Any) -> str | None:
    """TOKEN_IDS_KIND, EVENTS_KIND, or None for a record that is neither (it decides nothing)."""
    if isinstance(record, (tuple, list, str)):  # event IDs, or a line of the event-ID text format
        return EVENTS_KIND
    if isinstance(record, dict):
        if "token_ids" in record:
            return TOKEN_IDS_KIND
        if "event_sequence" in record or "event_ids" in record:
            return EVENTS_KIND
    return None


def parse_label(record: dict) -> tuple[int, str | None]:
    """(label, None), or (-1, problem). A record with no label has label -1."""
    label = record.get("label", record.get("is_anomaly"))
    if label is None:
        return -1, None
    if isinstance(label, bool):
        return int(label), None
    if isinstance(label, int) and label in (0, 1):
        return label, None
    if isinstance(label, str) and label.strip().lower() in LABEL_NAMES:
        return LABEL_NAMES[label.strip().lower()], None
    return -1, f"'label' must be 0/1, true/false or normal/anomaly, got {label!r}"


def parse_session_id(record: dict) -> tuple[str, str | None]:
    """(session id, None) ("" when the record has none), or ("", problem)."""
    for key in SESSION_ID_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return "", f"'{key}' must be a string or an integer, got {type(value).__name__}"
        return str(value), None
    return "", None


def _event_ids(events: Any) -> tuple[list[str] | None, str | None]:
    """Event IDs as strings, or a problem. A string is whitespace-separated IDs, never a sequence of characters."""
    if isinstance(events, str):
        return events.split(), None
    if not isinstance(events, (list, tuple)):
        return None, f"'event_sequence' must be a list of event IDs, got {type(events).__name__}"
    types = set(map(type, events))
    # All plain strings or ints, and joining with one space splits back into as many IDs: then none is blank or
    # holds whitespace. These C-level checks keep the per-record cost small; the loop below only finds the culprit.
    if types <= {str, int}:
        strings = list(map(str, events)) if int in types else list(events)
        if len(" ".join(strings).split()) == len(strings):
            return strings, None
    for position, event in enumerate(events):
        if isinstance(event, bool) or not isinstance(event, (int, str)) or (
                isinstance(event, str) and (not event or any(c.isspace() for c in event))):
            return None, (f"'event_sequence'[{position}] must be an event ID (integer or non-blank string), "
                          f"got {event!r}")
    return [str(event) for event in events], None  # int/str subclasses: checked one by one above


def _all_int64(values: list) -> bool:
    return set(map(type, values)) <= {int} and (not values or (min(values) >= _INT64_MIN and max(values) <= _INT64_MAX))


def _token_problem(ids: list, mask: list | None, vocab_size: int | None) -> tuple[list[int] | None, str | None]:
    """The real token ids (mask 1s), or the first problem in training's order of checks."""
    if not _all_int64(ids):
        bad = next(x for x in ids if isinstance(x, bool) or not isinstance(x, int) or not _INT64_MIN <= x <= _INT64_MAX)
        return None, f"'token_ids' must hold integers in [0, vocab_size), found {bad!r}"
    if mask is None:
        real = ids
    else:
        if not _all_int64(mask):
            bad = next(x for x in mask if isinstance(x, bool) or not isinstance(x, int) or x not in (0, 1))
            return None, f"'attention_mask' must hold 0 or 1, found {bad!r}"
        if not set(mask) <= {0, 1}:
            return None, f"'attention_mask' must hold 0 or 1, found {next(x for x in mask if x not in (0, 1))}"
        ones = mask.count(1)
        # Padding must come last: the mask is a prefix of ones.
        if 0 in mask[:ones]:
            return None, "'attention_mask' has a 1 after a 0: padding must come last"
        real = ids[:ones]
    if real and min(real) < 0:
        return None, f"token id {next(x for x in real if x < 0)} is negative: ids must be in [0, vocab_size)"
    if vocab_size is not None and real and max(real) >= vocab_size:
        bad = next(x for x in real if x >= vocab_size)
        return None, f"token id {bad} is out of range: ids must be below vocab_size {vocab_size}"
    if all(x in SPECIAL_TOKEN_IDS for x in real):
        return None, "empty session: expected at least one event besides [CLS]/[SEP]/[PAD]"
    return list(real), None


def normalize_session(record: Any, where: str | None = None, vocab_size: int | None = None) -> Session:
    """Validate one session with training's rules, and return it as a `Session`.

    Args:
        record: a dict record, a tuple or list of event IDs, or a string of whitespace-separated event IDs.
        where: where the record comes from, e.g. "sessions.json: record 3"; it opens the error message.
        vocab_size: token ids must be below it (token-id sessions); None skips that check.
    Returns:
        The `Session`. Token ids keep [CLS]/[SEP] as given; padding (mask 0s) is stripped.
    Raises:
        SessionError: naming `where` and what was expected.
    """
    kind = session_kind(record)
    if kind is None:
        if isinstance(record, dict):
            raise SessionError("missing field: expected 'token_ids' or 'event_sequence'", where)
        raise SessionError(f"expected a session object with 'token_ids' or 'event_sequence', got "
                           f"{type(record).__name__}", where)
    label, session_id = -1, ""
    if isinstance(record, dict):
        label, problem = parse_label(record)
        if problem:
            raise SessionError(problem, where)
        session_id, problem = parse_session_id(record)
        if problem:
            raise SessionError(problem, where)

    if kind == TOKEN_IDS_KIND:
        ids, mask = record["token_ids"], record.get("attention_mask")
        if not isinstance(ids, list):
            raise SessionError(f"'token_ids' must be a list of integers, got {type(ids).__name__}", where)
        if mask is not None and not isinstance(mask, list):
            raise SessionError(f"'attention_mask' must be a list of 0/1, got {type(mask).__name__}", where)
        if mask is not None and len(mask) != len(ids):
            raise SessionError(f"'token_ids' has {len(ids)} entries but 'attention_mask' has {len(mask)}: "
                               "expected the same length", where)
        token_ids, problem = _token_problem(ids, mask, vocab_size)
        if problem:
            raise SessionError(problem, where)
        return Session(kind, token_ids=token_ids, session_id=session_id, label=label)

    if isinstance(record, dict):
        events = record.get("event_sequence", record.get("event_ids"))
        if events is None:
            raise SessionError("'event_sequence' is null: expected a list of event IDs", where)
    else:
        events = record
    events, problem = _event_ids(events)
    if problem:
        raise SessionError(problem, where)
    if not events:
        raise SessionError("empty session: expected at least one event", where)
    return Session(kind, events=events, session_id=session_id, label=label)


def _is_array(value: Any) -> bool:
    """A numpy array (or alike), told apart without importing numpy: this module uses the standard library only."""
    return hasattr(value, "tolist") and hasattr(value, "shape")


def is_stream(inputs: Any) -> bool:
    """A generator, iterator or dataset of sessions (anything iterable or indexable but not a list, tuple,
    array, dict or string): scored a chunk at a time, never inspected first (that would use a generator up)."""
    if isinstance(inputs, (dict, str, bytes, list, tuple)) or _is_array(inputs):
        return False
    return isinstance(inputs, Iterable) or (hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__"))


def is_single_session(inputs: Any) -> bool:
    """One session is a string ("5 22 11") or a dict (a session object); a list is always a batch, as in
    transformers pipelines, whose items are strings, dicts or lists of event IDs.

    So `detector(["5", "22", "11"])` is three sessions of one event each; one session given as a list of event IDs
    is `detector([["5", "22", "11"]])[0]`. A batch item that is a bare event ID is an error, not a guess.
    """
    if isinstance(inputs, (dict, str)):
        return True
    if isinstance(inputs, (list, tuple)):
        for position, item in enumerate(inputs):
            if not (isinstance(item, (dict, str, list, tuple)) or _is_array(item)):
                raise SessionError(f"item {position} of the batch is {item!r}: a batch holds sessions (a string of "
                                   "event IDs, a session object, or a list of event IDs). To score one session given "
                                   "as a list of event IDs, pass [that list] or a string.")
        return False
    raise SessionError(f"a session is a string of event IDs, a session object or a list of them, got "
                       f"{type(inputs).__name__}")
