"""Outside values made safe in one place, and the limits every parser on the path agrees on.

Any value taken from a payload (an instance id, a message id, a chat id) that becomes a subject
token, a metric label, a database key or a log field goes through `bounded_id` first. It keeps
safe values unchanged; anything it has to cut or rewrite gets a hash suffix after `~`, a
character it never lets through otherwise, so two distinct inputs never share an output (`a.b`
becomes `a_b~<hash>`, while `a_b` stays `a_b`).

The JSON limits (`MAX_JSON_DEPTH`, the integer range, finite floats) are those ingest's sanitiser
enforces before anything is published: nats-py, pydantic (jiter, recursion limit 200), the
archiver and PostgreSQL's `jsonb` all accept what stays inside them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

MAX_TOKEN_CHARS: Final = 64
"""Longest subject token or metric label made from an outside value."""
MAX_ID_CHARS: Final = 128
"""Longest id kept as a database key or log field (instance, message, chat ids)."""
MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of a payload after sanitising (the top-level object is level 1)."""
MIN_JSON_INT: Final = -(2**63)
MAX_JSON_INT: Final = 2**63 - 1
"""Integers outside the signed 64-bit range are kept as their digits in a string."""

HASH_SEPARATOR: Final = "~"
_HASH_CHARS: Final = 12
_UNSAFE_TOKEN: Final = re.compile(r"[^A-Za-z0-9_\-]")
# Control characters (NUL included), `~` (ours), and lone UTF-16 surrogates.
_UNSAFE_TEXT: Final = re.compile(r"[\x00-\x1f\x7f~\ud800-\udfff]")


def bounded_id(value: str | int, *, token: bool = False, limit: int | None = None) -> str:
    """`value` as a bounded, safe string; unchanged when it already is one.

    With `token=True` only `[A-Za-z0-9_-]` is kept (a NATS subject token, a metric label) and
    the default limit is `MAX_TOKEN_CHARS`; otherwise printable text is kept (control characters,
    `~` and lone surrogates are not) up to `MAX_ID_CHARS`. A value that was changed or cut ends
    with `~` and 12 hex characters of the SHA-256 of the original, within `limit` characters.
    Raises `ValueError` when `limit` leaves no room for the suffix.
    """
    limit = limit if limit is not None else (MAX_TOKEN_CHARS if token else MAX_ID_CHARS)
    room = limit - _HASH_CHARS - 1
    if room < 1:
        raise ValueError(f"limit {limit} is too small for a hashed id")
    text = value if isinstance(value, str) else _int_text(value)
    unsafe = _UNSAFE_TOKEN if token else _UNSAFE_TEXT
    head = text[: limit + 1]
    if text and len(text) <= limit and unsafe.search(head) is None:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{unsafe.sub('_', head[:room])}{HASH_SEPARATOR}{digest}"


def _int_text(value: int) -> str:
    try:
        return format(value, "d")
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return hex(value)


def bounded_optional_id(
    value: object, *, token: bool = False, limit: int | None = None
) -> str | None:
    """`bounded_id` of a text or integer value; None for anything else (absent, bool, object)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, str) and not value:
        return None
    return bounded_id(value, token=token, limit=limit)
