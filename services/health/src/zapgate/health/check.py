"""Looking at one instance through the W-API port and turning the answers into an observation.

`status-instance` first (it never carries the phone, WAPI.md); the phone then comes from
`fetch-instance`, or `device` when fetch-instance has none, but only when it is not known or is
stale, so a healthy instance costs one provider call per tick.

The phone is looked up (`phone_is_fresh` is False) when the instance is not `connected` as
stored, when no phone is stored, when the phone was last *shown* (by fetch-instance, device or a
webhook's `connectedPhone`, never by a status-only check that repeated it) longer ago than the
instance's refresh age (`phone_refresh_age`: between half of `phone_max_age` and all of it,
fixed per instance; `ZAPGATE_HEALTH_PHONE_MAX_AGE`, ISO 8601, default `PT1H`), and on every
confirming check or stall re-check.

Why a refresh age per instance: phones first looked up in one tick (instances registered in bulk,
or health back after a pause longer than `phone_max_age`) would otherwise all go stale in one
later tick, every `phone_max_age`, and that tick would cost a status-instance plus a
fetch-instance per instance (100,000 instances: twice a steady tick, beyond the tick interval on
a small machine). Spread over half of `phone_max_age`, their lookups fall into several ticks, and
since each instance keeps its own period the phases drift further apart with every refresh. No
phone is ever older than `phone_max_age` without a lookup.

So a phone change is noticed:
- at once when the session went through any state a check or webhook saw (disconnected,
  degraded, unknown): the first connected check after it looks the phone up;
- at once when the provider's `webhookConnected` carries the new `connectedPhone`;
- otherwise (re-paired between two ticks, no webhook) within `phone_max_age`: the phone's age
  is not refreshed by status-only checks, so it goes stale and the next tick fetches it; a
  session back without any phone then ends degraded/SESSION_INCOMPLETE.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import datetime, timedelta

from zapgate.contracts.health import EvidenceSource, InstanceState
from zapgate.health.domain import Observation, Seen
from zapgate.health.ports import CheckTarget, SessionProvider
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import (
    ProviderFailure,
    ProviderRejected,
    ProviderUnauthorized,
)
from zapgate.wapi.results import DeviceInfo, InstanceDetails, InstanceStatus


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
        live=True,
    )


_HASH_RANGE = 2**32


def phone_refresh_age(instance_id: str, max_age: timedelta) -> timedelta:
    """How old `instance_id`'s phone may get before a check looks it up again: in
    `[max_age / 2, max_age)`, fixed per instance (CRC-32 of its id: the same in every process
    and replica), so phones shown in one tick are looked up again over several later ticks."""
    spread = zlib.crc32(instance_id.encode()) / _HASH_RANGE
    return max_age - max_age * spread / 2


def phone_is_fresh(target: CheckTarget, now: datetime, max_age: timedelta) -> bool:
    """True when a status-only check is enough: connected, phone known and shown within the
    instance's `phone_refresh_age` (at most `max_age`) before `now` (see the module's docstring
    for when a lookup is made)."""
    if (
        target.state is not InstanceState.CONNECTED
        or target.phone is None
        or target.phone_observed_at is None
    ):
        return False
    age = now - target.phone_observed_at
    # Below half of max_age every refresh age is ahead: no hash needed (most checks).
    return age < max_age / 2 or age < phone_refresh_age(target.instance_id, max_age)


async def check_instance(  # noqa: PLR0913 - keyword-only knobs of one check
    wapi: SessionProvider,
    target: CheckTarget,
    *,
    now: datetime,
    source: EvidenceSource,
    phone_max_age: timedelta,
    force_phone_lookup: bool = False,
    confirming: bool = False,
) -> Observation:
    """Ask the provider about one instance now; never raises for provider trouble.

    The observation is `live` (stamped `now`, health's clock). `confirming` marks the second
    check that confirms or clears a suspicion.
    """
    observation = await _look(
        wapi, target, now=now, source=source, phone_max_age=phone_max_age, force=force_phone_lookup
    )
    return replace(observation, confirming=confirming) if confirming else observation


async def _look(  # noqa: PLR0913 - keyword-only knobs of one check
    wapi: SessionProvider,
    target: CheckTarget,
    *,
    now: datetime,
    source: EvidenceSource,
    phone_max_age: timedelta,
    force: bool,
) -> Observation:
    credentials = target.credentials()
    status = await wapi.status_instance(credentials)
    if not isinstance(status, InstanceStatus):
        return _failed(status, source, now)
    if not status.connected:
        return Observation(seen=Seen.DISCONNECTED, source=source, observed_at=now, live=True)
    if not force and phone_is_fresh(target, now, phone_max_age):
        # Phone known and fresh: status-instance alone is enough. It repeats the known phone,
        # it does not show it again, so the phone's age keeps counting.
        return Observation(
            seen=Seen.CONNECTED,
            source=source,
            observed_at=now,
            phone=target.phone,
            phone_fresh=False,
            live=True,
        )
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
            return Observation(seen=Seen.DISCONNECTED, source=source, observed_at=now, live=True)
        if details.connected_phone:
            return Observation(
                seen=Seen.CONNECTED,
                source=source,
                observed_at=now,
                phone=details.connected_phone,
                live=True,
            )
    device = await wapi.device(credentials)
    if isinstance(device, DeviceInfo) and device.connected_phone:
        return Observation(
            seen=Seen.CONNECTED,
            source=source,
            observed_at=now,
            phone=device.connected_phone,
            live=True,
        )
    if first_failure is None or isinstance(device, DeviceInfo):
        # At least one of them answered, and none had a phone: the session is incomplete.
        return Observation(
            seen=Seen.CONNECTED_WITHOUT_PHONE, source=source, observed_at=now, live=True
        )
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
            live=True,
        )
    return _failed(first_failure, source, now)
