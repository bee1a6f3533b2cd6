"""Looking at one instance through the W-API port and turning the answers into an observation.

`status-instance` first (it never carries the phone, WAPI.md); the phone then comes from
`fetch-instance`, or `device` when fetch-instance has none, but only when it is not known or is
stale, so a healthy instance costs one provider call per tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import SecretStr

from zapgate.contracts.health import EvidenceSource, InstanceState
from zapgate.health.domain import Observation, Seen
from zapgate.health.ports import SessionProvider
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import (
    ProviderFailure,
    ProviderRejected,
    ProviderUnauthorized,
)
from zapgate.wapi.results import DeviceInfo, InstanceDetails, InstanceStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckTarget:
    """What a check needs to know about one instance (a snapshot of its row)."""

    instance_id: str
    token: str
    state: InstanceState
    phone: str | None
    phone_observed_at: datetime | None

    def credentials(self) -> InstanceCredentials:
        return InstanceCredentials(instance_id=self.instance_id, token=SecretStr(self.token))

    def __repr__(self) -> str:
        # Never let the token reach a log line or a traceback.
        return f"CheckTarget(instance_id={self.instance_id!r}, state={self.state.value!r})"


def _failure_seen(failure: ProviderFailure) -> Seen:
    if isinstance(failure, ProviderUnauthorized):
        return Seen.CREDENTIALS_REJECTED
    if isinstance(failure, ProviderRejected):
        return Seen.PROVIDER_REJECTED
    # Unavailable (5xx, gateway HTML, refused), timeout, unreadable answer.
    return Seen.UNREACHABLE


def _failed(failure: ProviderFailure, source: EvidenceSource, at: datetime) -> Observation:
    return Observation(
        seen=_failure_seen(failure),
        source=source,
        observed_at=at,
        detail=f"{failure.operation}: {failure.code} {failure.detail}"[:300],
    )


def phone_is_fresh(target: CheckTarget, now: datetime, max_age: timedelta) -> bool:
    return (
        target.state is InstanceState.CONNECTED
        and target.phone is not None
        and target.phone_observed_at is not None
        and now - target.phone_observed_at < max_age
    )


async def check_instance(  # noqa: PLR0913 - keyword-only knobs of one check
    wapi: SessionProvider,
    target: CheckTarget,
    *,
    now: datetime,
    source: EvidenceSource,
    phone_max_age: timedelta,
    force_phone_lookup: bool = False,
) -> Observation:
    """Ask the provider about one instance; never raises for provider trouble."""
    credentials = target.credentials()
    status = await wapi.status_instance(credentials)
    if not isinstance(status, InstanceStatus):
        return _failed(status, source, now)
    if not status.connected:
        return Observation(seen=Seen.DISCONNECTED, source=source, observed_at=now)
    if not force_phone_lookup and phone_is_fresh(target, now, phone_max_age):
        # Phone known and fresh: status-instance alone is enough.
        return Observation(seen=Seen.CONNECTED, source=source, observed_at=now, phone=target.phone)
    return await _with_phone(wapi, credentials, target, now=now, source=source)


async def _with_phone(
    wapi: SessionProvider,
    credentials: InstanceCredentials,
    target: CheckTarget,
    *,
    now: datetime,
    source: EvidenceSource,
) -> Observation:
    details = await wapi.fetch_instance(credentials)
    first_failure: ProviderFailure | None = None
    if not isinstance(details, InstanceDetails):
        first_failure = details
    else:
        if details.connected is False:
            return Observation(seen=Seen.DISCONNECTED, source=source, observed_at=now)
        if details.connected_phone:
            return Observation(
                seen=Seen.CONNECTED, source=source, observed_at=now, phone=details.connected_phone
            )
    device = await wapi.device(credentials)
    if isinstance(device, DeviceInfo) and device.connected_phone:
        return Observation(
            seen=Seen.CONNECTED, source=source, observed_at=now, phone=device.connected_phone
        )
    if first_failure is None or isinstance(device, DeviceInfo):
        # At least one of them answered, and none had a phone: the session is incomplete.
        return Observation(seen=Seen.CONNECTED_WITHOUT_PHONE, source=source, observed_at=now)
    if target.phone is not None:
        # The provider says connected and both phone lookups failed: keep the phone we knew
        # (its age is unchanged, so the next check looks again).
        return Observation(
            seen=Seen.CONNECTED,
            source=source,
            observed_at=now,
            phone=target.phone,
            phone_fresh=False,
            detail="phone lookups failed; kept the known phone",
        )
    return _failed(first_failure, source, now)
