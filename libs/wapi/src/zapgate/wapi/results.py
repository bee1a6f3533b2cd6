"""What a successful W-API call answers, as typed frozen values.

Parsing is tolerant (WAPI.md grades many fields C/D): unknown fields are ignored, and `raw`
keeps the whole answer where later code may need a field we do not model yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zapgate.wapi.webhook_slots import WebhookSlot


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStatus:
    """`status-instance`: connection only. It never carries the phone (WAPI.md)."""

    connected: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceDetails:
    """`fetch-instance`: the full record; `connected_phone` decides session completeness."""

    connected: bool | None
    connected_phone: str | None
    raw: Mapping[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """`device`: the phone the session runs on (grade C: every field may be missing)."""

    connected_phone: str | None
    lid: str | None
    name: str | None
    platform: str | None
    status: str | None
    is_business: bool | None
    raw: Mapping[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledged:
    """A command the provider accepted (`restart`, `disconnect`, `update-webhook-*`)."""

    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QrCode:
    """`qr-code`: either a data-URI image to scan, or `connected=True` and no image."""

    qrcode: str | None
    connected: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingCode:
    """`pairing-code`: the code the user types on the phone."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhooksConfigured:
    """Every requested slot now points at `url`."""

    url: str
    slots: tuple[WebhookSlot, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookLogs:
    """`fetch-webhook-logs` (grade C): kept raw until we learn its shape."""

    raw: Mapping[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAccepted:
    """The provider accepted a send and named the message. Not a delivery receipt."""

    message_id: str
    inserted_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reachable:
    """`ping()`: the provider's HTTP front answered."""

    latency_ms: float
