"""The simulator's vocabulary: instance specs, behaviours, faults, and what it recorded.

Pydantic models so the same types travel over the `/_sim/` HTTP control API as JSON.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr

from zapgate.wapi.webhook_slots import WebhookSlot


class DeliveryMode(StrEnum):
    """What happens after the simulator accepts a send."""

    PROGRESS = "progress"
    """Echo `webhookDelivery`, then `webhookStatus` SERVER -> DELIVERY -> READ."""
    ECHO_ONLY = "echo_only"
    """Echo `webhookDelivery`, then nothing: the phone shows "waiting for this message"."""
    SILENT = "silent"
    """Accepted with a messageId, and no webhook at all."""


class RestartMode(StrEnum):
    """What `restart` does to the session after dropping it."""

    COMEBACK = "comeback"
    """Reconnects after `restart_delay_s` (zero: at once)."""
    NEVER = "never"
    """Stays disconnected."""
    MANUAL = "manual"
    """Reconnects when the test calls `complete_restart`."""


class FaultKind(StrEnum):
    SERVER_ERROR = "server_error"
    """500 with a JSON error body."""
    BAD_GATEWAY = "bad_gateway"
    """502 HTML gateway page."""
    SERVICE_UNAVAILABLE = "service_unavailable"
    """503 HTML gateway page."""
    GATEWAY_TIMEOUT = "gateway_timeout"
    """504 HTML gateway page."""
    HANG = "hang"
    """Never answers, until the client gives up (or the simulator resets/stops)."""
    REJECT = "reject"
    """`status_code` (default 400) with `{"error": true, "message": message}`."""
    ERROR_BODY = "error_body"
    """200 with `{"error": true, "message": message}`."""
    NO_MESSAGE_ID = "no_message_id"
    """200 with a JSON object missing the expected fields (a send without messageId)."""
    NOT_JSON = "not_json"
    """200 with an HTML body."""
    DISCONNECT = "disconnect"
    """Read the request, then close the connection without answering: the client sees "server
    disconnected without sending a response", like a keep-alive connection the server closed
    as the request arrived. With `times=1` it is a single blip. The call is recorded, and not
    carried out (a send sends nothing)."""


class Fault(BaseModel):
    """A failure the simulator answers instead of the real behaviour."""

    model_config = ConfigDict(frozen=True)

    kind: FaultKind
    status_code: int | None = None
    message: str | None = None
    operations: frozenset[str] | None = None
    """Only these operations (e.g. `{"send-text"}`); None means every operation."""
    times: int | None = Field(default=None, ge=1)
    """Answer the fault this many times, then behave normally; None means until cleared."""


class InstanceSpec(BaseModel):
    """One simulated instance. `phone=None` with `connected=True` is an incomplete session."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    token: SecretStr
    phone: str | None = None
    lid: str | None = None
    name: str = "zapgate-sim"
    connected: bool = True
    latency_s: float = Field(default=0.0, ge=0)
    restart_mode: RestartMode = RestartMode.COMEBACK
    restart_delay_s: float = Field(default=0.0, ge=0)
    delivery: DeliveryMode | None = None
    """None: PROGRESS when the session is complete, ECHO_ONLY when it has no phone."""
    status_step_delay_s: float = Field(default=0.0, ge=0)
    webhook_url: str | None = None
    """Convenience: point all six slots at this URL."""
    receipts_before_answer: bool = False
    """A send posts its webhooks (the `webhookDelivery` echo and the statuses of its delivery
    mode) before answering, like gateways that wait for WhatsApp's server first."""
    send_answer_delay_s: float = Field(default=0.0, ge=0)
    """Seconds between accepting a send (or, with `receipts_before_answer`, posting its
    receipts) and answering it."""
    hold_send_answers: bool = False
    """Hold every send's answer (after its receipts, if those come first) until
    `release_answers`; a client that gives up meanwhile sees a timeout, the send still went."""
    moment_offset_s: float = 0.0
    """Added to `moment` of every webhook the simulator builds for this instance: the
    provider's clock skew (10800 = three hours ahead; negative = behind). Raw posts are as-is."""
    qr_rotate_s: float = Field(default=20.0, ge=0)
    """While disconnected, `qr-code` serves a new QR every this many seconds (0: every call)."""
    qr_scan_after_s: float | None = Field(default=None, ge=0)
    """The served QR is "scanned" this many seconds after the first `qr-code` call of a
    disconnected session, and the session connects; None: only when `scan_qr` is called."""
    pairing_enter_after_s: float | None = Field(default=None, ge=0)
    """A pairing code is "entered" on the phone this many seconds after it was issued, and
    the session connects with that phone number; None: only when `enter_pairing_code` is called."""


class InstancePatch(BaseModel):
    """Changes to an instance; only the fields that were set are applied."""

    model_config = ConfigDict(frozen=True)

    connected: bool | None = None
    phone: str | None = None
    lid: str | None = None
    latency_s: float | None = Field(default=None, ge=0)
    restart_mode: RestartMode | None = None
    restart_delay_s: float | None = Field(default=None, ge=0)
    delivery: DeliveryMode | None = None
    status_step_delay_s: float | None = Field(default=None, ge=0)
    receipts_before_answer: bool | None = None
    send_answer_delay_s: float | None = Field(default=None, ge=0)
    hold_send_answers: bool | None = None
    moment_offset_s: float | None = None
    qr_rotate_s: float | None = Field(default=None, ge=0)
    qr_scan_after_s: float | None = Field(default=None, ge=0)
    pairing_enter_after_s: float | None = Field(default=None, ge=0)


class InstanceState(BaseModel):
    """What the simulator holds for one instance right now (`GET /_sim/instances/{id}`)."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    connected: bool
    phone: str | None
    """The phone the session runs on (kept while disconnected; webhooks omit it then)."""
    held_answers: int
    """Send answers waiting for `release_answers`."""
    qr_codes_served: int
    """QR codes served since the session last dropped (0 once connected)."""
    pairing_code: str | None
    """The pairing code waiting to be entered, if any."""
    flapping: bool


class CallRecord(BaseModel):
    """One provider API call the simulator received (recorded before any fault or latency)."""

    model_config = ConfigDict(frozen=True)

    at: float
    method: str
    path: str
    operation: str
    instance_id: str | None
    query: dict[str, str]
    body: JsonValue = None


class WebhookRecord(BaseModel):
    """One webhook POST the simulator made, and what the receiver answered."""

    model_config = ConfigDict(frozen=True)

    at: float
    instance_id: str
    slot: WebhookSlot
    url: str
    event: str | None
    body: JsonValue
    status_code: int | None
    error: str | None = None


class CallFilter(BaseModel):
    model_config = ConfigDict(frozen=True)

    operation: str | None = None
    instance_id: str | None = None

    def matches(self, record: CallRecord) -> bool:
        return (self.operation is None or record.operation == self.operation) and (
            self.instance_id is None or record.instance_id == self.instance_id
        )


class WebhookFilter(BaseModel):
    model_config = ConfigDict(frozen=True)

    instance_id: str | None = None
    slot: WebhookSlot | None = None
    event: str | None = None
    where: dict[str, JsonValue] = Field(default_factory=dict)
    """Top-level body fields that must be equal, e.g. `{"status": "READ"}`."""

    def matches(self, record: WebhookRecord) -> bool:
        if self.instance_id is not None and record.instance_id != self.instance_id:
            return False
        if self.slot is not None and record.slot != self.slot:
            return False
        if self.event is not None and record.event != self.event:
            return False
        body = record.body if isinstance(record.body, dict) else {}
        return all(body.get(key) == value for key, value in self.where.items())
