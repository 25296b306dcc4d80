"""The fast path: token-id sessions as `json.dump` writes them, read without a Python object per token."""

from __future__ import annotations

import json
from functools import partial

import numpy as np

from ..session import SEED_SPECIAL_IDS, TOKEN_IDS_KIND, parse_label, parse_session_id
from .records import file_format, read_file_bytes, session_list
from .validate import ParsedFile, ParseSettings, token_session_table, truncate_sessions
# A reference-scale corpus is 2.5 million sessions of 512 token ids and 512 attention-mask entries: json.loads
# makes a Python int of each (2.5 billion) and turning them into Arrow arrays costs as much again; together they
# were over 90% of data preparation. The fast path cuts every innermost JSON array out of the file, checks and
# converts the arrays with bytes and numpy operations, and gives json.loads only the skeleton that is left (the
# session objects, each array replaced by a NaN placeholder), so everything but the arrays is still read by
# json.loads's own rules. It accepts only what it can prove well-formed in json.dump's layout (", " between
# items, no indentation); any other layout, anything it cannot prove, and any record the slow path would
# reject send the whole file to the slow path, so results and messages are the slow path's. Over-long sessions
# are cut by the same function as there.

_DIGIT_BYTES = frozenset(b"0123456789")
_QUOTE = ord('"')
_COMMA, _SPACE, _ZERO = ord(","), ord(" "), ord("0")
_PLACEHOLDER = b"NaN"
_SEPARATOR = b", "
_STRING_SEPARATOR = b'", "'
_REFERENCE_KEYS = {"token_ids", "attention_mask", "event_sequence", "session_id"}


def _cut_arrays(data: bytes) -> tuple[bytes, list[int], list[int], list[bool]]:
    """Cut the innermost arrays that open with a digit or a quote out of a JSON text.

    Returns (skeleton, starts, ends, numeric): the text with each such array replaced by NaN, where each array's
    content starts and ends in `data`, and whether it opened with a digit. A bracket inside a string can be
    taken for an array here; the caller finds out, because json.loads then reads that NaN as part of a string
    (the arrays cut hold no quote, or balanced quotes, so what is string and what is not stays the same).
    """
    find = data.find
    pieces, starts, ends, numeric = [], [], [], []
    position = copied = 0
    last = len(data) - 1
    while True:
        start = find(b"[", position)
        if start < 0 or start >= last:
            break
        first = data[start + 1]
        if first != _QUOTE and first not in _DIGIT_BYTES:  # an array of objects, a blank, a sign: not cut
            position = start + 1
            continue
        end = find(b"]", start)
        if end < 0:
            break
        inner = find(b"[", start + 1, end)
        if inner >= 0:  # not innermost: look at the inner one next
            position = inner
            continue
        pieces.append(data[copied:start])
        starts.append(start + 1)
        ends.append(end)
        numeric.append(first != _QUOTE)
        copied = position = end + 1
    pieces.append(data[copied:])
    return _PLACEHOLDER.join(pieces), starts, ends, numeric


def _are_string_lists(text: bytes) -> bool:
    """Whether `text`, string-array contents joined by ", ", is exactly '"a", "b", ...' with plain strings.

    Plain: no quote, backslash or control character inside. Counting proves the layout: with no backslash, the
    text opening and closing with a quote, Q quotes and K occurrences of '", "' with Q = 2K + 2 (and neither end
    inside an occurrence), every quote but the first and the last is in exactly one separator, so the text is
    strings separated by ", ".
    """
    if len(text) < 2 or text[0] != _QUOTE or text[-1] != _QUOTE or b"\\" in text:
        return False
    if text.startswith(_STRING_SEPARATOR) or text.endswith(_STRING_SEPARATOR):
        return False
    if text.count(b'"') != 2 * text.count(_STRING_SEPARATOR) + 2:
        return False
    if np.frombuffer(text, dtype=np.uint8).min() < 0x20:  # a raw control character: not valid JSON
        return False
    if not text.isascii():
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _parse_integers(text: bytes, max_digits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The non-negative integers of `text` written as "12, 7, 431", and where each starts in `text`.

    None unless `text` is exactly that (JSON numbers: no sign, fraction, exponent or leading zero) and every
    number has at most `max_digits` (up to 8) digits. The digits are read a machine word at a time: the word
    ending at each number's last byte, its other bytes masked off, is combined pairwise (x10, x100, x10^4).
    """
    raw = np.frombuffer(text, dtype=np.uint8)
    if not len(raw) or max_digits > 8:
        return None
    commas = np.flatnonzero(raw == _COMMA)
    count = len(commas) + 1
    # ", " after every comma and nothing but digits elsewhere: then the numbers are the runs between separators.
    if len(commas) and (commas[-1] + 1 >= len(raw) or (raw[commas + 1] != _SPACE).any()):
        return None
    if np.count_nonzero((raw - np.uint8(_ZERO)) < 10) != len(raw) - 2 * len(commas):
        return None
    ends = np.empty(count, dtype=np.int64)
    ends[:-1] = commas
    ends[-1] = len(raw)
    digits = np.empty(count, dtype=np.int64)
    digits[0] = ends[0]
    np.subtract(ends[1:], ends[:-1] + 2, out=digits[1:])
    if digits.min() < 1 or digits.max() > max_digits:
        return None

    width = 4 if max_digits <= 4 else 8
    word = np.dtype("<u4" if width == 4 else "<u8").type
    padded = np.empty(len(raw) + width, dtype=np.uint8)
    padded[:width] = _SPACE
    padded[width:] = raw
    # Overlapping little-endian words, one per byte offset: word k holds padded[k: k + width].
    windows = np.ndarray((len(raw) + 1,), dtype=word, buffer=padded, strides=(1,))
    shift = (8 * (width - digits)).astype(word)
    keep = word(np.iinfo(word).max) << shift  # the number's own bytes: the top `digits` of the word
    value = (windows[ends] & keep) - (word(int.from_bytes(b"0" * width, "little")) & keep)
    if (((value >> shift) & word(0xFF)) == 0)[digits > 1].any():  # a leading zero: 007 is not JSON
        return None
    # Bytes are digits, most significant first: pairs of bytes -> 16-bit lanes (x10), lanes -> (x100), ...
    value = (value & word(0x00FF00FF00FF00FF & np.iinfo(word).max)) * word(10) + \
        ((value >> word(8)) & word(0x00FF00FF00FF00FF & np.iinfo(word).max))
    value = (value & word(0x0000FFFF0000FFFF & np.iinfo(word).max)) * word(100) + \
        ((value >> word(16)) & word(0x0000FFFF0000FFFF & np.iinfo(word).max))
    if width == 8:
        value = (value & word(0xFFFFFFFF)) * word(10000) + (value >> word(32))
    return value.astype(np.int64), ends - digits


def parse_token_json_fast(path: str, settings: ParseSettings) -> ParsedFile | None:
    """`validate.parse_records` for a JSON array of valid token-id sessions; None whenever it cannot be sure.

    None means: use the slow path. It is returned for any other format or layout, any record the slow path
    would reject or cut, and any doubt, so that a result returned here is the slow path's, bit for bit.
    """
    data = read_file_bytes(path)
    if file_format(path, data[:4096]) != "json":
        return None
    skeleton, starts, ends, numeric = _cut_arrays(data)
    # Each placeholder NaN must be one of ours, and json.loads must read every one of them as a value: one read
    # as string content was a bracket inside a string. parse_constant hands out (index, is_numeric) in text
    # order (it is called for NaN and +-Infinity only, and the file has no Infinity outside the arrays).
    if not starts or skeleton.count(_PLACEHOLDER) != len(starts) or b"Infinity" in skeleton:
        return None
    slots = iter(list(zip(range(len(starts)), numeric)))
    try:
        document = json.loads(skeleton.decode("utf-8"), parse_constant=partial(next, slots))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    sessions = session_list(document)
    if not sessions or next(slots, None) is not None:
        return None

    session_ids: list[str] = []
    labels: list[int] = []
    mask_templates: dict[tuple[int, int], bytes] = {}
    zero_tails: dict[int, bytes] = {}
    regions = []  # each session's real token ids, as text
    real_lengths = [0] * len(sessions)  # from the mask; 0: no mask, the ids are counted instead
    referenced = 0  # numeric arrays used as some session's ids or mask
    find, startswith, endswith = data.find, data.startswith, data.endswith
    for number, record in enumerate(sessions):
        if type(record) is not dict:
            return None
        ids, mask = record.get("token_ids"), record.get("attention_mask")
        if type(ids) is not tuple or not ids[1]:
            return None
        if record.keys() == _REFERENCE_KEYS and type(record["session_id"]) is str:
            session_ids.append(record["session_id"])  # the reference layout, without the general checks below
            labels.append(-1)
        else:
            label, problem = parse_label(record)
            session_id, id_problem = parse_session_id(record)
            if problem or id_problem:
                return None
            session_ids.append(session_id)
            labels.append(label)
        id_start, id_end = starts[ids[0]], ends[ids[0]]
        referenced += 1
        if mask is None:
            regions.append(data[id_start:id_end])
            continue
        if type(mask) is not tuple or not mask[1]:
            return None
        referenced += 1
        # A mask of 0s and 1s in json.dump's layout has 3 bytes per entry: its ones, then the padding zeros.
        mask_start, mask_end = starts[mask[0]], ends[mask[0]]
        total = (mask_end - mask_start + 2) // 3
        zero = find(b"0", mask_start, mask_end)
        ones = total if zero < 0 else (zero - mask_start) // 3
        if ones == 0 or 3 * total - 2 != mask_end - mask_start:
            return None
        key = (ones, total)
        if key not in mask_templates:
            mask_templates[key] = (b"1, " * ones + b"0, " * (total - ones))[:-2]
        if not startswith(mask_templates[key], mask_start):
            return None
        padding = total - ones
        if padding:
            if padding not in zero_tails:
                zero_tails[padding] = b", 0" * padding
            if not endswith(zero_tails[padding], id_start, id_end):
                return None
            id_end -= 3 * padding
            if id_end <= id_start:
                return None
        regions.append(data[id_start:id_end])
        real_lengths[number] = ones
    # A numeric array that is no session's ids or mask (another field, a duplicate key): json.loads's to read.
    if referenced != sum(numeric):
        return None
    if not all(numeric) and not _are_string_lists(_SEPARATOR.join(
            [data[start:end] for start, end, is_numeric in zip(starts, ends, numeric) if not is_numeric])):
        return None

    parsed = _parse_integers(_SEPARATOR.join(regions), len(str(max(settings.vocab_size - 1, 0))))
    if parsed is None:
        return None
    values, number_starts = parsed
    region_lengths = np.fromiter(map(len, regions), dtype=np.int64, count=len(regions))
    region_starts = np.concatenate([[0], np.cumsum(region_lengths[:-1] + len(_SEPARATOR))])
    first_numbers = np.searchsorted(number_starts, region_starts)
    counted = np.diff(np.append(first_numbers, len(values)))
    expected = np.asarray(real_lengths)
    if (expected[expected > 0] != counted[expected > 0]).any():  # a mask keeps exactly as many ids as its ones
        return None

    # The slow path's checks on real tokens (the masks are proven 1s-then-0s above); any failure is its to report.
    if values.max() >= settings.vocab_size:
        return None
    special = np.zeros(settings.vocab_size, dtype=bool)
    special[[i for i in SEED_SPECIAL_IDS.values() if i < settings.vocab_size]] = True
    if not np.logical_or.reduceat(~special[values], first_numbers).all():  # only [CLS]/[SEP]/[PAD]: empty
        return None
    too_long = np.flatnonzero(counted > settings.max_seq_length)
    if len(too_long):
        if not settings.truncate_long_sessions:
            return None
        values, counted = truncate_sessions(values, counted, too_long, settings.max_seq_length)
    table = token_session_table(values, counted, session_ids, labels, list(range(1, len(sessions) + 1)))
    return ParsedFile(table, TOKEN_IDS_KIND, truncated=len(too_long))

