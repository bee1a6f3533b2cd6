"""The one sanitising step: webhook bytes in, a JSON object every consumer can take out.

Pure, never raises. What it changes it names in `Parsed.fixes`; the exact bytes travel with
the event anyway (`body_base64` or the body store), so a fix never loses what was sent.

- bytes that are not UTF-8 (nor UTF-16/32 with a BOM): U+FFFD per bad sequence, `invalid_utf8`;
- a lone UTF-16 surrogate (`"\\ud83d"`) or NUL in a key or value: U+FFFD, `lone_surrogate`,
  `nul_character`;
- `NaN`, `Infinity`, `-Infinity`: `null`, `non_finite_number`;
- an integer outside int64, a float that overflows (`1e400`): its digits as a string,
  `number_out_of_range`;
- a key repeated in one object: the last value (as JavaScript and Python read it),
  `duplicate_key`;
- nesting deeper than `MAX_JSON_DEPTH`: the string `DEPTH_CUT` in place of the deeper part,
  `too_deep`.

Beyond `MAX_PARSE_DEPTH` levels a body is not read at all: it is quarantined
(`WEBHOOK_TOO_DEEP`), bytes kept. Limits: `zapgate.contracts.bounds`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from zapgate.contracts.bounds import MAX_JSON_DEPTH, MAX_JSON_INT, MIN_JSON_INT
from zapgate.contracts.webhooks import WebhookErrorCode

DEPTH_CUT: Final = "[zapgate: nesting deeper than 64 levels cut; the exact body is kept]"
_REPLACEMENT: Final = "\ufffd"
_BAD_CHARACTERS: Final = re.compile(r"[\x00\ud800-\udfff]")
# A `\u` escape that may spell NUL or a UTF-16 surrogate (an escaped backslash before it only
# makes the walk run for nothing).
_RISKY_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
MAX_PARSE_DEPTH: Final = 4000
"""Deepest body read at all; deeper is quarantined as `WEBHOOK_TOO_DEEP`."""
_MAX_INT_DIGITS: Final = 19  # int64 has at most 19 digits; more is surely out of range


class Fix(StrEnum):
    """What the sanitiser changed in a payload (carried as `sanitized` on the event)."""

    INVALID_UTF8 = "invalid_utf8"
    LONE_SURROGATE = "lone_surrogate"
    NUL_CHARACTER = "nul_character"
    NON_FINITE_NUMBER = "non_finite_number"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A safe payload and what was fixed, or why there is no payload (`problem`)."""

    payload: dict[str, Any] | None
    problem: WebhookErrorCode | None = None
    fixes: tuple[Fix, ...] = ()


class _Reader:
    """Parser hooks for one body; they note what they had to change."""

    def __init__(self) -> None:
        self.fixes: set[Fix] = set()

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            self.fixes.add(Fix.DUPLICATE_KEY)
        return result

    def constant(self, _name: str) -> None:
        self.fixes.add(Fix.NON_FINITE_NUMBER)

    def integer(self, digits: str) -> int | str:
        if len(digits.lstrip("-")) <= _MAX_INT_DIGITS:
            value = int(digits)
            if MIN_JSON_INT <= value <= MAX_JSON_INT:
                return value
        self.fixes.add(Fix.NUMBER_OUT_OF_RANGE)
        return digits

    def real(self, text: str) -> float | str:
        value = float(text)
        if math.isfinite(value):
            return value
        self.fixes.add(Fix.NUMBER_OUT_OF_RANGE)
        return text


def parse_webhook(body: bytes) -> Parsed:
    """The sanitised JSON object in `body`, or the coded reason it has none."""
    reader = _Reader()
    text = _decode(body, reader.fixes)
    try:
        value = _load(text, reader)
    except RecursionError:
        return Parsed(None, WebhookErrorCode.WEBHOOK_TOO_DEEP)
    except ValueError:
        return Parsed(None, WebhookErrorCode.WEBHOOK_NOT_JSON)
    if not isinstance(value, dict):
        return Parsed(None, WebhookErrorCode.WEBHOOK_NOT_OBJECT)
    # Escapes (`\u0000`, `\ud800`-`\udfff`) are the only way to spell a NUL or a surrogate in
    # valid JSON text (other escapes, such as `\u00e1`, are harmless), and nesting needs more
    # brackets than the limit: most bodies need no walk at all.
    if _RISKY_ESCAPE.search(text) or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        value = sanitize_value(value, reader.fixes)
    return Parsed(value, None, tuple(sorted(reader.fixes)))


def _load(text: str, reader: _Reader) -> Any:  # noqa: ANN401 - any JSON value
    def load() -> Any:  # noqa: ANN401
        return json.loads(
            text,
            object_pairs_hook=reader.pairs,
            parse_constant=reader.constant,
            parse_int=reader.integer,
            parse_float=reader.real,
        )

    try:
        return load()
    except RecursionError:
        # The parser nests on the interpreter's recursion budget (what is left of ~1,000 where
        # it runs); read deep bodies once more with room for MAX_PARSE_DEPTH levels.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, MAX_PARSE_DEPTH + 1000))
        try:
            return load()
        finally:
            sys.setrecursionlimit(limit)


def sanitize_value(value: dict[str, Any], fixes: set[Fix] | None = None) -> dict[str, Any]:
    """A copy of an already-parsed object within the limits (strings, depth); `fixes` collects
    what changed. For payloads that did not come through `parse_webhook` (replays, tests)."""
    seen = fixes if fixes is not None else set()
    cleaned: dict[str, Any] = _clean_object(value, 1, seen)
    return cleaned


def _decode(body: bytes, fixes: set[Fix]) -> str:
    encoding = json.detect_encoding(body)  # UTF-8 (BOM or not), UTF-16 and UTF-32
    try:
        return body.decode(encoding)
    except UnicodeDecodeError:
        fixes.add(Fix.INVALID_UTF8)
        return body.decode(encoding, errors="replace")


def _clean_object(value: dict[str, Any], depth: int, fixes: set[Fix]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in value.items():
        clean_key = _clean_text(key, fixes)
        if clean_key in result:
            fixes.add(Fix.DUPLICATE_KEY)  # two keys that differed only in a bad character
        result[clean_key] = _clean(item, depth, fixes)
    return result


def _clean(value: Any, depth: int, fixes: set[Fix]) -> Any:  # noqa: ANN401 - any JSON value
    if isinstance(value, str):
        return _clean_text(value, fixes)
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            fixes.add(Fix.TOO_DEEP)
            return DEPTH_CUT
        if isinstance(value, dict):
            return _clean_object(value, depth + 1, fixes)
        return [_clean(item, depth + 1, fixes) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        fixes.add(Fix.NON_FINITE_NUMBER)
        return None
    return value


def _clean_text(text: str, fixes: set[Fix]) -> str:
    if _BAD_CHARACTERS.search(text) is None:
        return text
    if "\x00" in text:
        fixes.add(Fix.NUL_CHARACTER)
    if any("\ud800" <= char <= "\udfff" for char in text):
        fixes.add(Fix.LONE_SURROGATE)
    return _BAD_CHARACTERS.sub(_REPLACEMENT, text)
