"""Large bodies: what an event keeps inline, and what can be read from a body too big to take.

Pure. A body whose event would not fit one bus message keeps its exact bytes in the body store
(JetStream Object Store) under `body_object_name(body)`; the event carries that name, its typed
fields, and `raw` with every string longer than the field limit replaced by a short note.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from zapgate.contracts.bounds import bounded_id

if TYPE_CHECKING:
    from zapgate.contracts.webhooks import WebhookEvent

DEFAULT_INLINE_EVENT_BYTES: Final = 256 * 1024
"""Largest event published inline; above it the body goes to the body store."""
FIELD_BYTES: Final = 16 * 1024
"""Longest string kept in `raw` of an event whose body is in the body store."""
QUARANTINE_PREFIX_BYTES: Final = 64 * 1024
"""How much of a body over the hard cap the quarantine keeps."""
BODY_RECORD_SUBJECT: Final = "$zapgate.body"
"""Spool records with this subject hold a body for the body store, not a bus message."""
_PEEK_BYTES: Final = 256 * 1024
_FIELDS: Final = {"instance_id": b"instanceId", "event": b"event", "message_id": b"messageId"}


def body_object_name(body: bytes) -> str:
    """The body store name of `body`: its SHA-256, so the same bytes are stored once."""
    return f"body-{hashlib.sha256(body).hexdigest()}"


def omitted_note(length: int) -> str:
    return f"[zapgate: {length} characters omitted; the exact body is in body_object]"


def slim_event(event: WebhookEvent, object_name: str, *, field_bytes: int) -> WebhookEvent:
    """`event` with its body in the store: long strings of `raw` left out and listed."""
    omitted: list[str] = []
    raw = _slim(event.raw, "", field_bytes, omitted)
    return event.model_copy(
        update={
            "raw": raw,
            "omitted_fields": omitted,
            "body_object": object_name,
            "body_base64": None,
        }
    )


def _slim(value: Any, path: str, limit: int, omitted: list[str]) -> Any:  # noqa: ANN401 - JSON
    if isinstance(value, str):
        if len(value) > limit:
            omitted.append(path or "$")
            return omitted_note(len(value))
        return value
    if isinstance(value, dict):
        return {
            key: _slim(item, f"{path}.{key}" if path else key, limit, omitted)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_slim(item, f"{path}[{index}]", limit, omitted) for index, item in enumerate(value)]
    return value


@dataclass(frozen=True, slots=True)
class PeekedIds:
    """Ids read from the bytes of a body that will not be parsed; None when absent."""

    instance_id: str | None
    event: str | None
    message_id: str | None

    def fields(self) -> dict[str, str | None]:
        """For a log line (structlog reserves `event`)."""
        return {
            "instance_id": self.instance_id,
            "provider_event": self.event,
            "message_id": self.message_id,
        }


def peek_ids(prefix: bytes) -> PeekedIds:
    """`instance_id`, `event` and `message_id` found in the first bytes of a body that will not
    be parsed (too large, or not JSON), bounded like every outside value; None when absent."""
    head = prefix[:_PEEK_BYTES]
    found: dict[str, str | None] = {}
    for name, field in _FIELDS.items():
        match = re.search(rb'"' + field + rb'"\s*:\s*"((?:[^"\\]|\\.){1,1000})"', head)
        value = match.group(1).decode("utf-8", "replace") if match else None
        found[name] = bounded_id(value) if value else None
    return PeekedIds(**found)
