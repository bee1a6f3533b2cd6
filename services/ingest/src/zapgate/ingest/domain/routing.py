"""Route one W-API webhook body to one typed event (pure: no I/O, never raises).

Facts and grades behind every branch: shared/WAPI.md. Where the provider's shape is uncertain
the router is tolerant: unknown fields are ignored, unknown values kept as raw text, and a body
that cannot be read is routed to `WebhookUnrouted` with its key set instead of being dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from pydantic import ValidationError

from zapgate.contracts.webhooks import (
    Chat,
    ChatChannel,
    ChatPresenceObserved,
    DeliveryStatus,
    InstanceConnected,
    InstanceDisconnected,
    MessageChanged,
    MessageReceived,
    MessageSent,
    MessageStatusReported,
    Sender,
    WebhookDisposition,
    WebhookEvent,
    WebhookKind,
    WebhookUnrouted,
)
from zapgate.ingest.domain.content import (
    as_dict,
    content_fingerprint,
    ident,
    number,
    read_message,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

Payload: TypeAlias = dict[str, Any]

EVENT_RECEIVED: Final = "webhookReceived"
EVENT_DELIVERY: Final = "webhookDelivery"
EVENT_STATUS: Final = "webhookStatus"
EVENT_CONNECTED: Final = "webhookConnected"
EVENT_DISCONNECTED: Final = "webhookDisconnected"
PRESENCE_SHAPE: Final = "presence"

# Event ids are derived from the dedupe key, so a resent webhook gets the same event id.
_EVENT_ID_NAMESPACE: Final = uuid.UUID("5b0f4c3e-8a61-4f7c-9a57-0c1d2e3f4a5b")
_MILLISECONDS_THRESHOLD: Final = 10**11  # a `moment` above this is in ms, not seconds
_STATUS_WORDS: Final = {
    "PENDING": DeliveryStatus.PENDING,
    "SERVER": DeliveryStatus.SENT,
    "SERVER_ACK": DeliveryStatus.SENT,
    "SENT": DeliveryStatus.SENT,
    "DELIVERY": DeliveryStatus.DELIVERED,
    "DELIVERY_ACK": DeliveryStatus.DELIVERED,
    "DELIVERED": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    "PLAYED": DeliveryStatus.PLAYED,
    "ERROR": DeliveryStatus.FAILED,
    "FAILED": DeliveryStatus.FAILED,
}
_STORY_IDS: Final = frozenset({"status", "status@broadcast"})
_READ_ERRORS: Final = (
    ValidationError,
    TypeError,
    ValueError,
    AttributeError,
    KeyError,
    RecursionError,
)


def dedupe_key(kind: WebhookKind | str, parts: list[Any]) -> str:
    """`<kind>:<hash>`: safe as a Nats-Msg-Id header whatever the provider's ids contain."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:40]
    return f"{kind}:{digest}"


def body_dedupe_key(kind: str, body: bytes) -> str:
    """Key of a body we keep whole (quarantine): the same bytes are kept once."""
    return f"{kind}:{hashlib.sha256(body).hexdigest()[:40]}"


def route(
    payload: Payload,
    received_at: datetime,
    *,
    sanitized: Sequence[str] = (),
    body: bytes | None = None,
) -> WebhookEvent:
    """The typed event for one webhook body. Never raises: what it cannot read is unrouted.

    `sanitized` (the sanitiser's fixes) and `body` (the exact bytes, carried as `body_base64`)
    are set on the event as it is built: a copy of the finished model per field costs more.
    """
    extra: dict[str, Any] = {}
    if sanitized:
        extra["sanitized"] = list(sanitized)
    if body is not None:
        extra["body_base64"] = base64.b64encode(body).decode()
    try:
        return _route(payload, received_at, extra)
    except (
        ValidationError,
        TypeError,
        ValueError,
        AttributeError,
        KeyError,
        RecursionError,
    ) as error:
        return _unrouted(payload, received_at, f"unreadable: {type(error).__name__}", extra)


def _route(payload: Payload, received_at: datetime, extra: dict[str, Any]) -> WebhookEvent:
    instance_id = ident(payload.get("instanceId"))
    if instance_id is None:
        return _unrouted(payload, received_at, "no_instance_id", extra)
    event = payload.get("event")
    at = _At(received_at, extra)
    if event is None and "chat" in payload and "status" in payload:
        return _presence(payload, instance_id, at)
    if event in {EVENT_RECEIVED, EVENT_DELIVERY}:
        return _message(payload, instance_id, at, sent=event == EVENT_DELIVERY)
    if event == EVENT_STATUS:
        return _status(payload, instance_id, at)
    if event in {EVENT_CONNECTED, EVENT_DISCONNECTED}:
        return _session(payload, instance_id, at, connected=event == EVENT_CONNECTED)
    reason = "no_event" if event is None else "unknown_event"
    return _unrouted(payload, received_at, reason, extra)


@dataclass(frozen=True, slots=True)
class _At:
    """When a body arrived, and the fields set on its event besides what is read from it."""

    received_at: datetime
    extra: dict[str, Any]


def _session(payload: Payload, instance_id: str, at: _At, *, connected: bool) -> WebhookEvent:
    event = EVENT_CONNECTED if connected else EVENT_DISCONNECTED
    identity = _without_message_id(payload, [event, instance_id])
    if connected:
        kind = WebhookKind.INSTANCE_CONNECTED
        return InstanceConnected(**_common(payload, instance_id, at, kind, identity))
    kind = WebhookKind.INSTANCE_DISCONNECTED
    return InstanceDisconnected(**_common(payload, instance_id, at, kind, identity))


def _common(
    payload: Payload,
    instance_id: str | None,
    at: _At,
    kind: WebhookKind,
    identity: list[Any],
) -> dict[str, Any]:
    moment = _moment(payload.get("moment"))
    key = dedupe_key(kind, identity)
    received_at = at.received_at
    return {
        **at.extra,
        "event_id": uuid.uuid5(_EVENT_ID_NAMESPACE, key),
        "occurred_at": moment or received_at,
        "correlation_id": key,
        "instance_id": instance_id,
        "received_at": received_at,
        "moment": moment,
        "dedupe_key": key,
        "connected_phone": _phone(payload.get("connectedPhone")),
        "raw": payload,
    }


def _without_message_id(payload: Payload, identity: list[Any]) -> list[Any]:
    # WAPI.md: events without a messageId dedupe on instance + event shape + moment. Without a
    # moment either, the whole body is the only stable identity.
    moment = payload.get("moment")
    if moment is None:
        return [*identity, sorted(payload.keys()), payload]
    return [*identity, sorted(payload.keys()), moment]


def message_key(event: str, instance_id: str | None, message_id: str) -> str:
    """Identity of one provider message, whatever its content: several bodies of one message
    (a placeholder, then the real text) share it; the archive tells content updates by it."""
    return dedupe_key("message", [event, instance_id, message_id])


def _message(payload: Payload, instance_id: str, at: _At, *, sent: bool) -> WebhookEvent:
    event = EVENT_DELIVERY if sent else EVENT_RECEIVED
    message_id = ident(payload.get("messageId"))
    msg_content = as_dict(payload.get("msgContent"))
    # Same message again = same id and same content (docs/design.md, ingest): a later body
    # with other content under a known id is kept, not swallowed as a duplicate.
    identity: list[Any] = [event, instance_id, message_id, content_fingerprint(msg_content)]
    if message_id is None:
        identity = _without_message_id(payload, identity)
    chat = _chat(payload)
    sender = _sender(payload)
    reading = read_message(msg_content, stub_type=payload.get("messageStubType"))
    change = reading.change
    if change is not None:
        common = _common(payload, instance_id, at, WebhookKind.MESSAGE_CHANGED, identity)
        return MessageChanged(
            **common,
            change=change.kind,
            message_id=message_id,
            target_message_id=change.target_message_id,
            chat=chat,
            sender=sender,
            new_text=change.new_text,
            reaction=change.reaction,
            poll_vote=change.poll_vote,
            content=change.content,
        )
    if sent:
        common = _common(payload, instance_id, at, WebhookKind.MESSAGE_SENT, identity)
        return MessageSent(
            **common,
            message_id=message_id,
            from_api=_bool(payload.get("fromApi")),
            chat=chat,
            content=reading.content if msg_content else None,
        )
    common = _common(payload, instance_id, at, WebhookKind.MESSAGE_RECEIVED, identity)
    return MessageReceived(
        **common,
        message_id=message_id,
        from_me=_bool(payload.get("fromMe")) or False,
        chat=chat,
        sender=sender,
        content=reading.content,
    )


def _status(payload: Payload, instance_id: str, at: _At) -> WebhookEvent:
    message_id = ident(payload.get("messageId"))
    status_raw = text(payload.get("status")) or ""
    identity: list[Any] = [EVENT_STATUS, instance_id, message_id, status_raw]
    if message_id is None:
        identity = _without_message_id(payload, identity)
    common = _common(payload, instance_id, at, WebhookKind.MESSAGE_STATUS, identity)
    return MessageStatusReported(
        **common,
        message_id=message_id,
        status=_STATUS_WORDS.get(status_raw.strip().upper()),
        status_raw=status_raw,
        chat_id=_chat_id(payload.get("chat")),
    )


def _presence(payload: Payload, instance_id: str, at: _At) -> WebhookEvent:
    chat_id = _chat_id(payload.get("chat"))
    status_raw = text(payload.get("status"))
    identity = _without_message_id(payload, [PRESENCE_SHAPE, instance_id, chat_id, status_raw])
    common = _common(payload, instance_id, at, WebhookKind.CHAT_PRESENCE, identity)
    return ChatPresenceObserved(
        **common,
        chat_id=chat_id,
        status_raw=status_raw,
        connected_lid=text(payload.get("connectedLid")),
    )


def _unrouted(
    payload: Payload, received_at: datetime, reason: str, extra: dict[str, Any] | None = None
) -> WebhookUnrouted:
    instance_id = ident(payload.get("instanceId"))
    keys = sorted(str(key) for key in payload)
    try:
        key = dedupe_key(WebhookKind.UNROUTED, [instance_id, payload])
    except (RecursionError, ValueError):
        key = dedupe_key(WebhookKind.UNROUTED, [instance_id, keys, received_at.isoformat()])
    try:
        moment = _moment(payload.get("moment"))
        phone = _phone(payload.get("connectedPhone"))
    except (TypeError, ValueError):  # pragma: no cover - both helpers already refuse bad input
        moment, phone = None, None
    return WebhookUnrouted(
        event_id=uuid.uuid5(_EVENT_ID_NAMESPACE, key),
        occurred_at=moment or received_at,
        correlation_id=key,
        instance_id=instance_id,
        received_at=received_at,
        moment=moment,
        dedupe_key=key,
        connected_phone=phone,
        raw=payload,
        reason=reason,
        keys=keys,
        **(extra or {}),
    )


# --- chats and senders -----------------------------------------------------------------------


def _chat(payload: Payload) -> Chat:
    chat_id = _chat_id(payload.get("chat")) or ""
    is_group = _bool(payload.get("isGroup")) or chat_id.endswith("@g.us")
    return Chat(
        id=chat_id,
        is_group=is_group,
        is_lid=chat_id.endswith("@lid"),
        channel=channel_of(chat_id),
    )


def channel_of(chat_id: str) -> ChatChannel:
    """Stories (`status`, `status@broadcast`) and channels (`@newsletter`) are marked."""
    if chat_id in _STORY_IDS:
        return ChatChannel.STORY
    if chat_id.endswith("@newsletter"):
        return ChatChannel.NEWSLETTER
    return ChatChannel.CHAT


def _chat_id(chat: object) -> str | None:
    if isinstance(chat, dict):
        return ident(chat.get("id"))
    return ident(chat)


def _sender(payload: Payload) -> Sender:
    sender = as_dict(payload.get("sender"))
    return Sender(
        id=ident(sender.get("id")),
        push_name=text(sender.get("pushName")),
        lid=ident(sender.get("senderLid")),
    )


# --- tolerant scalars ------------------------------------------------------------------------


def _phone(value: object) -> str | None:
    phone = text(value)
    return ident(phone.strip()) if phone is not None else None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None


def _moment(value: object) -> datetime | None:
    """Unix seconds (or milliseconds) as a datetime; None for anything out of range."""
    seconds = number(value)
    if seconds is None:
        return None
    if seconds > _MILLISECONDS_THRESHOLD:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def disposition_of(kind: str, code: str | None) -> WebhookDisposition:
    """What became of an archived group: quarantine rows carry a code; payloads are routed
    unless their kind is `unrouted`."""
    if code is not None:
        return WebhookDisposition.QUARANTINED
    if kind == WebhookKind.UNROUTED:
        return WebhookDisposition.UNROUTED
    return WebhookDisposition.ROUTED
