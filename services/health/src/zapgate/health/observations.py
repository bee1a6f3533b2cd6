"""Turning the messages other services send health into observations for the state machine."""

from __future__ import annotations

from zapgate.contracts.health import (
    DeliverySignal,
    DeliverySignalled,
    EvidenceSource,
    SessionObserved,
    SessionProofOfLife,
)
from zapgate.contracts.webhooks import InstanceConnected, InstanceDisconnected
from zapgate.health.domain import Observation, Seen


def from_proof_of_life(event: SessionProofOfLife) -> Observation:
    """A webhook carried `connectedPhone`: the session is alive and complete right now."""
    return Observation(
        seen=Seen.CONNECTED,
        source=EvidenceSource.PROOF_OF_LIFE,
        observed_at=event.observed_at,
        phone=event.phone,
        detail=f"webhook {event.source_kind}",
    )


def from_session_observed(event: SessionObserved) -> Observation | None:
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
        seen=seen, source=event.source, observed_at=event.observed_at, phone=event.phone or None
    )


def from_delivery_signal(event: DeliverySignalled) -> Observation:
    seen = (
        Seen.DELIVERY_STALLED if event.signal is DeliverySignal.STALLED else Seen.DELIVERY_RESUMED
    )
    return Observation(
        seen=seen,
        source=EvidenceSource.DELIVERY_TRACKING,
        observed_at=event.observed_at,
        proves_delivery=event.signal is DeliverySignal.RESUMED,
        detail=",".join(event.message_ids[:10]) or None,
    )


def from_connection_webhook(event: InstanceConnected | InstanceDisconnected) -> Observation:
    """`webhookConnected` with a phone is proof; without one it is a claim to verify."""
    observed_at = event.moment or event.received_at
    if isinstance(event, InstanceDisconnected):
        seen = Seen.DISCONNECTED
    elif event.connected_phone:
        seen = Seen.CONNECTED
    else:
        seen = Seen.CONNECTED_CLAIM
    return Observation(
        seen=seen,
        source=EvidenceSource.WEBHOOK,
        observed_at=observed_at,
        phone=event.connected_phone or None,
    )
