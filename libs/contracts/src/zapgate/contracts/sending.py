"""Send commands, their honest outcomes, and delivery tracking (stream ZG_SEND).

An outcome states what happened; it never carries a success flag next to a failure.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field

from zapgate.contracts.envelope import Contract, Envelope
from zapgate.contracts.errors import Problem
from zapgate.contracts.health import InstanceId
from zapgate.contracts.webhooks import DeliveryStatus

CommandId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-:]+$")]
# Formatting people and systems put in phone numbers: spaces (also no-break and thin ones),
# parentheses, dots, slashes and every kind of dash.
_PHONE_FORMATTING = re.compile(r"[\s().\-/\u2010-\u2015\u2212\u00a0\u202f]")
_JID_SUFFIXES = ("@s.whatsapp.net", "@c.us")


def normalise_phone(value: object) -> object:
    """The canonical form of a phone as callers write it; anything else is left to the pattern.

    `+55 (84) 98888-7777` -> `+5584988887777` (formatting stripped, `+` kept: it says the number
    carries its country code); `5584988887777@s.whatsapp.net` (or `@c.us`) -> `+5584988887777`
    (a WhatsApp id always carries it); digits of any script become ASCII, a JSON number
    becomes its digits; `...@g.us` and
    `...@lid` ids keep their form (suffix lower-cased). Whether bare digits carry a country
    code is the sender's decision (its default country), not the contract's.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # JSON callers send numbers too: 5584988887777
    if not isinstance(value, str):
        return value
    text = unicodedata.normalize("NFKC", value).strip()
    lowered = text.lower()
    for suffix in (*_JID_SUFFIXES, "@g.us", "@lid"):
        if lowered.endswith(suffix):
            user = text[: -len(suffix)].strip()
            if suffix in _JID_SUFFIXES:
                return "+" + _ascii_digits(user.removeprefix("+"))
            return _ascii_digits(user) + suffix
    stripped = _PHONE_FORMATTING.sub("", text)
    if stripped.startswith("+"):
        return "+" + _ascii_digits(stripped[1:])
    return _ascii_digits(stripped)


def _ascii_digits(text: str) -> str:
    return "".join(str(unicodedata.digit(char)) if char.isdigit() else char for char in text)


Phone = Annotated[
    str,
    BeforeValidator(normalise_phone),
    # No length bounds besides the pattern's: a refusal then always says "formato".
    Field(
        pattern=r"^(\+?[0-9]{8,20}|[0-9\-]{1,100}@g\.us|[0-9]{1,100}@lid)$",
        description=(
            "Digits with country code (`+` and formatting accepted: `+55 (84) 98888-7777`), a "
            "WhatsApp id `...@s.whatsapp.net`, a group id `...@g.us`, or a `...@lid` id. Stored "
            "normalised; bare digits without a country code are refused unless the sender has "
            "a default country."
        ),
    ),
]
MediaRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=20_000_000,
        pattern=r"^(https?://|data:)",
        description="An http(s) URL or a data: URI.",
    ),
]
MAX_HOLD = timedelta(hours=24)


class MessageKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"


class TextContent(Contract):
    kind: Literal[MessageKind.TEXT] = MessageKind.TEXT
    message: str = Field(min_length=1, max_length=65_536)


class ImageContent(Contract):
    kind: Literal[MessageKind.IMAGE] = MessageKind.IMAGE
    image: MediaRef
    caption: str | None = Field(default=None, max_length=4096)


class AudioContent(Contract):
    kind: Literal[MessageKind.AUDIO] = MessageKind.AUDIO
    audio: MediaRef


class VideoContent(Contract):
    kind: Literal[MessageKind.VIDEO] = MessageKind.VIDEO
    video: MediaRef
    caption: str | None = Field(default=None, max_length=4096)


class DocumentContent(Contract):
    kind: Literal[MessageKind.DOCUMENT] = MessageKind.DOCUMENT
    document: MediaRef
    extension: str = Field(pattern=r"^[A-Za-z0-9]{1,10}$", description="Required by W-API.")
    file_name: str | None = Field(default=None, max_length=255)
    caption: str | None = Field(default=None, max_length=4096)


MessageBody = Annotated[
    TextContent | ImageContent | AudioContent | VideoContent | DocumentContent,
    Field(discriminator="kind"),
]


class SendMessage(Envelope):
    """Send one message through one instance. `command_id` is the caller's idempotency key."""

    command_id: CommandId
    instance_id: InstanceId
    phone: Phone
    body: MessageBody
    quoted_message_id: str | None = Field(default=None, max_length=200)
    delay_message: int | None = Field(
        default=None, ge=1, le=15, description="Seconds the provider waits before sending."
    )
    hold_for: timedelta = Field(
        default=timedelta(0),
        ge=timedelta(0),
        le=MAX_HOLD,
        description="How long to wait for an unhealthy instance to recover; 0 fails at once.",
    )
    retry_of: CommandId | None = Field(
        default=None, description="command_id of the failed send this one retries."
    )


class SendStatus(StrEnum):
    """Where one command stands. `sent` and later mean the provider accepted it."""

    HELD = "held"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"
    UNCERTAIN = "uncertain"

    @property
    def is_final_decision(self) -> bool:
        return self is not SendStatus.HELD


class SendOutcome(Envelope):
    """The decision on one command: accepted by the provider, failed, uncertain, or held."""

    command_id: str
    instance_id: str
    phone: str
    kind: MessageKind | None = Field(description="None only for a command that could not be read.")
    status: SendStatus
    provider_message_id: str | None = None
    error: Problem | None = Field(default=None, description="Set exactly when not accepted.")
    attempts: int = Field(ge=0)
    session_health: str | None = Field(
        default=None, description="Instance state seen by the preflight, e.g. degraded."
    )
    retry_of: str | None = None
    replayed: bool = Field(
        default=False, description="True when this is the stored outcome of an earlier delivery."
    )


class MessageStatusChanged(Envelope):
    """A sent message moved forward (delivered, read, played) or failed after sending."""

    command_id: str
    instance_id: str
    provider_message_id: str
    from_status: SendStatus
    to_status: SendStatus
    provider_status: DeliveryStatus | None = None


class MessageStuck(Envelope):
    """Alert: a message has stayed `sent` longer than the window."""

    command_id: str
    instance_id: str
    provider_message_id: str | None
    sent_at: AwareDatetime
    stuck_for: timedelta


class RetrySend(Envelope):
    """Retry a failed send as a new attempt linked to the original."""

    command_id: CommandId = Field(description="The failed command to retry.")
    new_command_id: CommandId


class GetSendOutcome(Envelope):
    command_id: CommandId


class CancelSend(Envelope):
    """Cancel a held command: it fails with `CANCELLED` and is never sent.

    Refused with `NOT_CANCELLABLE` once the command left `held`, `NOT_FOUND` when unknown.
    """

    command_id: CommandId


class StatusTime(Contract):
    """One step of a command's timeline: `accepted` (stored) or a SendStatus, and when."""

    status: str = Field(description="`accepted` or a SendStatus value.")
    at: AwareDatetime


class SendOutcomeReply(Contract):
    ok: bool
    outcome: SendOutcome | None = None
    error: Problem | None = None
    timeline: list[StatusTime] = Field(
        default_factory=list,
        description="Every status the command reached, oldest first (outcome queries only).",
    )


# --- listing API (used by the console; see /work/notes/SENDER_API.md) --------------------------


class ListSends(Envelope):
    """One instance's sends, newest first. `statuses` narrows to those statuses; `stuck` to
    sends accepted by the provider (`sent`) longer ago than the sender's stuck window and still
    not delivered."""

    instance_id: InstanceId
    statuses: list[SendStatus] = Field(default_factory=list, max_length=8)
    stuck: bool = False
    limit: int = Field(default=50, ge=1, le=200)


class SendSummary(Contract):
    """One send as listings show it: its status, error and the time of each step (UTC)."""

    command_id: str
    instance_id: str
    phone: str
    kind: MessageKind
    status: SendStatus
    provider_message_id: str | None = None
    error: Problem | None = None
    attempts: int = 0
    retry_of: str | None = None
    created_at: AwareDatetime
    held_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    delivered_at: AwareDatetime | None = None
    read_at: AwareDatetime | None = None
    played_at: AwareDatetime | None = None
    failed_at: AwareDatetime | None = None


class SendListReply(Contract):
    ok: bool
    sends: list[SendSummary] = Field(default_factory=list)
    error: Problem | None = None


class CountStuck(Envelope):
    """How many sends are stuck (see `ListSends.stuck`) for every instance that has any."""


class StuckCountsReply(Contract):
    ok: bool
    counts: dict[str, int] = Field(default_factory=dict, description="instance_id -> stuck")
    error: Problem | None = None
