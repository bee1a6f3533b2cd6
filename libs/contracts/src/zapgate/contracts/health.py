"""Instance health: the state machine's vocabulary, its events, observations and API.

Health is the only writer of instance state. Other services send it observations and
requests; everyone reads the same answer through its events or its API.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_serializer

from zapgate.contracts.envelope import Contract, Envelope
from zapgate.contracts.errors import Problem

InstanceId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")]


class InstanceState(StrEnum):
    UNKNOWN = "unknown"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    DISCONNECTED = "disconnected"


class DegradedReason(StrEnum):
    """Why an instance is degraded; more may be added (consumers keep unknown values)."""

    SESSION_INCOMPLETE = "SESSION_INCOMPLETE"
    TIMEOUT_OR_GATEWAY = "TIMEOUT_OR_GATEWAY"
    DELIVERY_STALLED = "DELIVERY_STALLED"
    CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"
    """The provider answered 401/403: the instance id or token is wrong; restarts cannot help."""
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    """The provider answered the check with an error of its own (4xx or `error: true`)."""


class EvidenceSource(StrEnum):
    """What told health about the session."""

    TICK = "tick"
    CHECK_NOW = "check_now"
    WEBHOOK = "webhook"
    PROOF_OF_LIFE = "proof_of_life"
    SENDER_PREFLIGHT = "sender_preflight"
    DELIVERY_TRACKING = "delivery_tracking"
    OPERATOR = "operator"


class InstanceStateChanged(Envelope):
    """One transition of the state machine (also stored in the history table)."""

    instance_id: str
    from_state: InstanceState
    from_reason: str | None = None
    to_state: InstanceState
    reason: str | None = Field(default=None, description="Degraded reason, when degraded.")
    source: EvidenceSource
    phone: str | None = None
    observed_at: AwareDatetime = Field(description="When the evidence was true.")


class SessionProofOfLife(Envelope):
    """A webhook carrying `connectedPhone` proved the session alive and complete (from ingest)."""

    instance_id: str
    phone: str
    source_kind: str = Field(description="Webhook kind that carried the proof.")
    observed_at: AwareDatetime = Field(
        description="The provider's `moment` (or receipt time without one): data, not order."
    )
    received_at: AwareDatetime | None = Field(
        default=None,
        description="When ingest accepted the webhook (zapgate's clock); health orders "
        "evidence by it, and by its own receipt time when absent.",
    )


class SessionObserved(Envelope):
    """A live look at the session taken outside health, e.g. the sender's preflight."""

    instance_id: str
    reachable: bool = Field(description="False when the provider did not answer.")
    connected: bool | None = None
    phone: str | None = None
    source: EvidenceSource = EvidenceSource.SENDER_PREFLIGHT
    observed_at: AwareDatetime


class ReconnectRequested(Envelope):
    """Someone saw the session down and asks health to restart it (health applies the cooldown)."""

    instance_id: str
    requested_by: str
    reason: str | None = None


class DeliverySignal(StrEnum):
    STALLED = "stalled"
    RESUMED = "resumed"


class DeliverySignalled(Envelope):
    """The sender saw deliveries stall for an instance, or resume after a stall."""

    instance_id: str
    signal: DeliverySignal
    message_ids: list[str] = Field(default_factory=list)
    observed_at: AwareDatetime


class NotificationKind(StrEnum):
    """One outage notice when an episode opens, one instability notice when its flaps reach
    the threshold, one recovered notice when it closes (after the settle window)."""

    OUTAGE = "outage"
    RECOVERED = "recovered"
    UNSTABLE = "unstable"


class InstanceNotification(Envelope):
    """One per kind per outage episode (see `NotificationKind`). `text` is for people (pt-BR)."""

    instance_id: str
    kind: NotificationKind
    state: InstanceState
    reason: str | None = None
    since: AwareDatetime = Field(description="When the outage episode started.")
    text: str
    flaps: int = Field(
        default=0, ge=0, description="Drops inside the episode after it started (so far)."
    )


class HealthTick(Contract):
    """Body of the tick the NATS server publishes on the health schedule."""

    kind: Literal["health_tick"] = "health_tick"


# --- read model -----------------------------------------------------------------------------


class InstanceHealth(Contract):
    """Current health of one instance, as every caller sees it."""

    instance_id: str
    display_name: str
    managed: bool
    paused: bool
    state: InstanceState
    reason: str | None = None
    phone: str | None = None
    since: AwareDatetime | None = None
    last_check_at: AwareDatetime | None = None
    last_restart_attempt_at: AwareDatetime | None = None
    outage_started_at: AwareDatetime | None = Field(
        default=None, description="Start of the open outage episode (None: no episode open)."
    )
    episode_flaps: int = Field(
        default=0, ge=0, description="Drops inside the open episode after it started."
    )
    unstable: bool = Field(
        default=False, description="The open episode's flaps reached the instability threshold."
    )
    blips: int = Field(
        default=0, ge=0, description="Single bad looks a confirming check cleared (lifetime)."
    )
    phone_observed_at: AwareDatetime | None = Field(
        default=None,
        description="When the session's phone was last seen: a webhook carrying "
        "`connectedPhone` (proof of life) or a check's phone lookup.",
    )
    restart_cooldown_until: AwareDatetime | None = Field(
        default=None,
        description="Health restarts this instance again (by itself or for an operator) no "
        "sooner than this: the last restart attempt plus health's restart cooldown. None: no "
        "restart attempt yet.",
    )
    restart_cooldown_left_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds of that cooldown left when health answered, by health's clock "
        "(0: a restart is allowed now).",
    )


# --- request-reply API ------------------------------------------------------------------------


class RegisterInstance(Envelope):
    """Add an instance to the registry (or update its name/token with `replace=True`)."""

    instance_id: InstanceId
    display_name: str = Field(min_length=1, max_length=200)
    token: SecretStr = Field(min_length=1)
    managed: bool = True
    replace: bool = False

    @field_serializer("token", when_used="json")
    def _reveal_token_on_the_wire(self, token: SecretStr) -> str:
        # The wire carries the secret to health; repr/str and python dumps keep it masked.
        return token.get_secret_value()


class PauseInstance(Envelope):
    instance_id: InstanceId
    paused: bool = True


class RemoveInstance(Envelope):
    instance_id: InstanceId


class ListInstances(Envelope):
    pass


class GetInstanceHealth(Envelope):
    """Ask for one instance's health, or every instance's when `instance_id` is None."""

    instance_id: InstanceId | None = None


class CheckNow(Envelope):
    """Check one instance now, or every managed instance when `instance_id` is None."""

    instance_id: InstanceId | None = None


class InstanceSummary(Contract):
    """A registry entry as listings show it: never the token."""

    instance_id: str
    display_name: str
    managed: bool
    paused: bool


class RegistryReply(Contract):
    ok: bool
    instance: InstanceSummary | None = None
    error: Problem | None = None


class InstanceListReply(Contract):
    ok: bool = True
    instances: list[InstanceSummary] = Field(default_factory=list)
    error: Problem | None = None


class HealthReply(Contract):
    ok: bool
    instances: list[InstanceHealth] = Field(default_factory=list)
    error: Problem | None = None


class CheckNowReply(Contract):
    ok: bool
    checked: list[InstanceHealth] = Field(default_factory=list)
    error: Problem | None = None


# --- operator API (used by the console; see /work/notes/HEALTH_API_ADDITIONS.md) ---------------


class RestartInstance(Envelope):
    """An operator asks health to restart an instance now; health's cooldown still applies."""

    instance_id: InstanceId
    requested_by: str = Field(min_length=1, max_length=100)


class RestartReply(Contract):
    """`restarted` False with `ok` True: refused by the cooldown (`cooldown_until` says when)."""

    ok: bool
    restarted: bool = False
    accepted_by_provider: bool | None = Field(
        default=None, description="The provider's answer to the restart call, when one was made."
    )
    cooldown_until: AwareDatetime | None = Field(
        default=None, description="Health will not restart this instance again before this."
    )
    error: Problem | None = None


class GetQrCode(Envelope):
    """Ask the provider for the QR code that reconnects an instance's session."""

    instance_id: InstanceId


class QrCodeReply(Contract):
    """`image`: the provider's QR (a `data:image/...;base64,` URI, or the raw QR text);
    `connected` True: the session is already connected and there is nothing to scan."""

    ok: bool
    connected: bool = False
    image: str | None = None
    error: Problem | None = None


class RequestPairingCode(Envelope):
    """Ask the provider for a pairing code that connects `phone` (digits, with country code)."""

    instance_id: InstanceId
    phone: str = Field(pattern=r"^[1-9][0-9]{9,14}$")


class PairingCodeReply(Contract):
    ok: bool
    code: str | None = Field(default=None, description="Typed on the phone (Linked devices).")
    error: Problem | None = None


class GetInstanceHistory(Envelope):
    """The newest state changes of one instance (newest first)."""

    instance_id: InstanceId
    limit: int = Field(default=50, ge=1, le=500)


class InstanceHistoryReply(Contract):
    ok: bool
    transitions: list[InstanceStateChanged] = Field(default_factory=list)
    error: Problem | None = None
