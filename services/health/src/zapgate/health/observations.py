"""Turning the messages other services send health into observations for the domain.

Our clock orders evidence: `observed_at` is when zapgate received the evidence (ingest's
`received_at`, or health's own receipt time), never the provider's `moment`, which travels as
`provider_moment` (data, for logs) and is clamped to our clock.
"""

from __future__ import annotations

from datetime import datetime

from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    EvidenceSource,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import (
    DeliveryStatus,
    InstanceConnected,
    InstanceDisconnected,
    MessageStatusReported,
)
from zapgate.health.domain import Observation, Seen

_DELIVERED = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.READ, DeliveryStatus.PLAYED})


def _moment(moment: datetime | None, now: datetime) -> datetime | None:
    return min(moment, now) if moment is not None else None


def from_proof_of_life(event: SessionProofOfLife, *, now: datetime) -> Observation:
    """A webhook carried `connectedPhone`: the session is alive and complete right now."""
    return Observation(
        seen=Seen.CONNECTED,
        source=EvidenceSource.PROOF_OF_LIFE,
        observed_at=min(event.received_at or now, now),
        phone=event.phone,
        provider_moment=_moment(event.observed_at, now),
        detail=f"webhook {event.source_kind}",
    )


def from_session_observed(event: SessionObserved, *, now: datetime) -> Observation | None:
    """The sender's live look. A `connected` without phone (status-only) is only a claim."""
    if not event.reachable:
        seen = Seen.UNREACHABLE
    elif event.connected is None:
        return None
    elif not event.connected:
        seen = Seen.DISCONNECTED
    elif event.phone:
        seen = Seen.CONNECTED
    else:
        seen = Seen.CONNECTED_CLAIM
    return Observation(
        seen=seen,
        source=event.source,
        observed_at=min(event.observed_at, now),
        phone=event.phone or None,
    )


def from_delivery_signal(event: DeliverySignalled, *, now: datetime) -> Observation:
    seen = (
        Seen.DELIVERY_STALLED if event.signal is DeliverySignal.STALLED else Seen.DELIVERY_RESUMED
    )
    return Observation(
        seen=seen,
        source=EvidenceSource.DELIVERY_TRACKING,
        observed_at=min(event.observed_at, now),
        proves_delivery=event.signal is DeliverySignal.RESUMED,
        detail=",".join(event.message_ids[:10]) or None,
    )


def from_receipt(event: MessageStatusReported, *, now: datetime) -> Observation | None:
    """A delivered/read/played receipt is fresh delivery evidence for its instance."""
    if event.status not in _DELIVERED:
        return None
    return Observation(
        seen=Seen.DELIVERY_RESUMED,
        source=EvidenceSource.DELIVERY_TRACKING,
        observed_at=min(event.received_at, now),
        proves_delivery=True,
        provider_moment=_moment(event.moment, now),
        detail=f"receipt {event.status_raw} {event.message_id or ''}".strip(),
    )


def from_connection_webhook(
    event: InstanceConnected | InstanceDisconnected, *, now: datetime
) -> Observation:
    """`webhookConnected` with a phone is proof; without one it is a claim to verify.
    `webhookDisconnected` is a suspicion: a live check confirms it before anything changes."""
    if isinstance(event, InstanceDisconnected):
        seen = Seen.DISCONNECTED
    elif event.connected_phone:
        seen = Seen.CONNECTED
    else:
        seen = Seen.CONNECTED_CLAIM
    return Observation(
        seen=seen,
        source=EvidenceSource.WEBHOOK,
        observed_at=min(event.received_at, now),
        phone=event.connected_phone or None,
        provider_moment=_moment(event.moment, now),
    )
