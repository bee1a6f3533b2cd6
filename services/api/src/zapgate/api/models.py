"""The HTTP API's request and response bodies (the OpenAPI document is generated from these).

Request bodies refuse unknown fields (a typo must not silently drop an option); responses reuse
the bus contracts (`SendOutcome`, `InstanceHealth`) so HTTP and NATS callers read one shape.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from zapgate.api.domain import EventType
from zapgate.contracts.health import InstanceHealth
from zapgate.contracts.sending import (
    MAX_HOLD,
    AudioContent,
    DocumentContent,
    ImageContent,
    MediaRef,
    MessageKind,
    Phone,
    SendOutcome,
    StatusTime,
    TextContent,
    VideoContent,
)

Content = TextContent | ImageContent | AudioContent | VideoContent | DocumentContent
PHONE_EXAMPLE = "5511988887777"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SendOptions(_Request):
    """What every kind of message takes besides its content."""

    phone: Phone
    quoted_message_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="messageId to reply to."
    )
    delay_message: int | None = Field(
        default=None, ge=1, le=15, description="Seconds the provider waits before sending."
    )
    hold_for_seconds: int = Field(
        default=0,
        ge=0,
        le=int(MAX_HOLD.total_seconds()),
        description="How long to wait for an unhealthy instance to recover; 0 fails at once.",
    )

    @property
    def hold_for(self) -> timedelta:
        return timedelta(seconds=self.hold_for_seconds)

    def content(self) -> Content:
        raise NotImplementedError


class SendText(SendOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": PHONE_EXAMPLE, "message": "Olá! Seu pedido saiu."}]
        }
    )
    message: str = Field(min_length=1, max_length=65_536)

    def content(self) -> Content:
        return TextContent(message=self.message)


class SendImage(SendOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "phone": PHONE_EXAMPLE,
                    "image": "https://example.com/nota.png",
                    "caption": "Sua nota",
                }
            ]
        }
    )
    image: MediaRef
    caption: str | None = Field(default=None, max_length=4096)

    def content(self) -> Content:
        return ImageContent(image=self.image, caption=self.caption)


class SendAudio(SendOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": PHONE_EXAMPLE, "audio": "https://example.com/aviso.ogg"}]
        }
    )
    audio: MediaRef

    def content(self) -> Content:
        return AudioContent(audio=self.audio)


class SendVideo(SendOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": PHONE_EXAMPLE, "video": "https://example.com/tour.mp4"}]
        }
    )
    video: MediaRef
    caption: str | None = Field(default=None, max_length=4096)

    def content(self) -> Content:
        return VideoContent(video=self.video, caption=self.caption)


class SendDocument(SendOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "phone": PHONE_EXAMPLE,
                    "document": "https://example.com/boleto.pdf",
                    "extension": "pdf",
                    "file_name": "boleto.pdf",
                }
            ]
        }
    )
    document: MediaRef
    extension: str = Field(pattern=r"^[A-Za-z0-9]{1,10}$", description="Required by W-API.")
    file_name: str | None = Field(default=None, max_length=255)
    caption: str | None = Field(default=None, max_length=4096)

    def content(self) -> Content:
        return DocumentContent(
            document=self.document,
            extension=self.extension,
            file_name=self.file_name,
            caption=self.caption,
        )


SEND_BODIES: dict[MessageKind, type[SendOptions]] = {
    MessageKind.TEXT: SendText,
    MessageKind.IMAGE: SendImage,
    MessageKind.AUDIO: SendAudio,
    MessageKind.VIDEO: SendVideo,
    MessageKind.DOCUMENT: SendDocument,
}

MessageState = Literal[
    "accepted", "held", "sent", "delivered", "read", "played", "failed", "uncertain"
]

_OUTCOME_EXAMPLE: dict[str, Any] = {
    "event_id": "2f1c7f0e-8d5e-4a57-9a43-0f6a4f8f1a11",
    "occurred_at": "2026-11-30T12:00:01Z",
    "schema_version": 1,
    "correlation_id": "3f9a1c2b4d5e-pedido-1234",
    "command_id": "3f9a1c2b4d5e-pedido-1234",
    "instance_id": "loja-centro",
    "phone": PHONE_EXAMPLE,
    "kind": "text",
    "status": "sent",
    "provider_message_id": "3EB0C767D26A1D8A",
    "error": None,
    "attempts": 1,
    "session_health": "connected",
    "retry_of": None,
    "replayed": False,
}


class Message(BaseModel):
    """One command as the API shows it: where it stands, its outcome and its timeline."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "command_id": "3f9a1c2b4d5e-pedido-1234",
                    "status": "sent",
                    "status_url": "/v1/messages/3f9a1c2b4d5e-pedido-1234",
                    "outcome": _OUTCOME_EXAMPLE,
                    "timeline": [
                        {"status": "accepted", "at": "2026-11-30T12:00:00Z"},
                        {"status": "sent", "at": "2026-11-30T12:00:01Z"},
                    ],
                }
            ]
        }
    )

    command_id: str
    status: MessageState = Field(
        description="`accepted` until the sender decides, then the outcome's status."
    )
    status_url: str = Field(description="Where to read this message later (GET).")
    outcome: SendOutcome | None = Field(
        default=None, description="The sender's decision; null while only accepted."
    )
    timeline: list[StatusTime] = Field(
        default_factory=list, description="Every status reached, oldest first."
    )


class FieldError(BaseModel):
    """One invalid field: where it is, a stable code (pydantic's type) and a pt-BR message."""

    location: str = Field(description="body, query, header or path")
    field: str = Field(description="Dotted path of the field inside its location.")
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every refusal: a stable `code` and a pt-BR `message`; `errors` lists invalid fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "INVALID_REQUEST",
                    "message": "A requisição tem campos inválidos; veja 'errors'.",
                    "detail": None,
                    "errors": [
                        {
                            "location": "body",
                            "field": "phone",
                            "code": "string_pattern_mismatch",
                            "message": "Telefone inválido: use o número com DDI e DDD "
                            "(ex.: 5511988887777 ou +55 11 98888-7777), um grupo '...@g.us' "
                            "ou um id '...@lid'.",
                        }
                    ],
                }
            ]
        }
    )

    code: str
    message: str
    detail: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


INSTANCE_EXAMPLE: dict[str, Any] = {
    "instance_id": "loja-centro",
    "display_name": "Loja Centro",
    "managed": True,
    "paused": False,
    "state": "connected",
    "reason": None,
    "phone": "5511999990000",
    "since": "2026-11-30T11:00:00Z",
    "last_check_at": "2026-11-30T12:00:00Z",
    "last_restart_attempt_at": None,
    "outage_started_at": None,
}


class InstanceList(BaseModel):
    """The instances this API key may use, with their current health."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [INSTANCE_EXAMPLE]}]})

    instances: list[InstanceHealth]


_EVENTS_DOC = (
    "Which events to receive: `message.outcome` (the sender's decision on your commands), "
    "`message.status` (delivered, read, played), `message.received` (messages arriving at "
    "your instances). All by default."
)


class SubscriptionCreate(_Request):
    """Where to POST your events. Each is signed per Standard Webhooks with the returned secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"url": "https://minha-loja.example/zapgate", "events": ["message.outcome"]}
            ]
        }
    )
    url: HttpUrl = Field(description="An http(s) URL that answers 2xx when it took the event.")
    events: list[EventType] = Field(
        default_factory=lambda: list(EventType), min_length=1, description=_EVENTS_DOC
    )


_SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "subscription_id": "sub_5b0c2e7f9a1d4c3b",
    "url": "https://minha-loja.example/zapgate",
    "events": ["message.outcome", "message.status"],
}


class SubscriptionPublic(BaseModel):
    """A subscription as listings show it (never its secret)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SUBSCRIPTION_EXAMPLE]})

    subscription_id: str
    url: str
    events: list[EventType]


class SubscriptionCreated(SubscriptionPublic):
    """A new subscription; `secret` (`whsec_...`) is shown only here: keep it to verify."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _SUBSCRIPTION_EXAMPLE | {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
            ]
        }
    )

    secret: str


class SubscriptionList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"subscriptions": [_SUBSCRIPTION_EXAMPLE]}]}
    )

    subscriptions: list[SubscriptionPublic]
