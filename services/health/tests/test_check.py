"""One check through the provider port: which calls, and what they mean."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.contracts.health import EvidenceSource, InstanceState
from zapgate.health.check import check_instance, phone_refresh_age
from zapgate.health.domain import Seen
from zapgate.health.ports import CheckTarget
from zapgate.wapi.failures import (
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
)
from zapgate.wapi.results import DeviceInfo, InstanceDetails, InstanceStatus

from .fakes import FakeProvider

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX_AGE = timedelta(hours=1)
PHONE = "5511999990000"


def target(
    state: InstanceState = InstanceState.UNKNOWN,
    phone: str | None = None,
    phone_age: timedelta | None = None,
) -> CheckTarget:
    return CheckTarget(
        instance_id="I1",
        token="secret-token",
        state=state,
        phone=phone,
        phone_observed_at=NOW - phone_age if phone_age is not None else None,
    )


async def run(provider: FakeProvider, checked: CheckTarget, *, force: bool = False) -> Seen:
    observation = await check_instance(
        provider,
        checked,
        now=NOW,
        source=EvidenceSource.TICK,
        phone_max_age=MAX_AGE,
        force_phone_lookup=force,
    )
    assert observation.observed_at == NOW
    return observation.seen


async def test_a_connected_instance_with_a_fresh_phone_costs_one_call() -> None:
    """Known, fresh phone: status-instance only."""
    provider = FakeProvider()
    seen = await run(provider, target(InstanceState.CONNECTED, PHONE, timedelta(minutes=5)))
    assert seen is Seen.CONNECTED
    assert provider.operations() == ["status-instance"]


async def test_an_unknown_phone_is_fetched_with_fetch_instance() -> None:
    """First check: status-instance then fetch-instance for the phone."""
    provider = FakeProvider()
    observation = await check_instance(
        provider, target(), now=NOW, source=EvidenceSource.TICK, phone_max_age=MAX_AGE
    )
    assert observation.seen is Seen.CONNECTED
    assert observation.phone == PHONE
    assert provider.operations() == ["status-instance", "fetch-instance"]


async def test_a_stale_phone_is_fetched_again() -> None:
    """A phone older than the max age is looked up again."""
    provider = FakeProvider()
    await run(provider, target(InstanceState.CONNECTED, PHONE, timedelta(hours=2)))
    assert provider.operations() == ["status-instance", "fetch-instance"]


async def test_device_is_asked_when_fetch_instance_has_no_phone() -> None:
    """fetch-instance without connectedPhone: the phone comes from device."""
    provider = FakeProvider(
        details=InstanceDetails(connected=True, connected_phone=None),
        device_info=DeviceInfo(
            connected_phone=PHONE, lid=None, name=None, platform=None, status=None, is_business=None
        ),
    )
    assert await run(provider, target()) is Seen.CONNECTED
    assert provider.operations() == ["status-instance", "fetch-instance", "device"]


async def test_connected_without_any_phone_is_an_incomplete_session() -> None:
    """Neither fetch-instance nor device know the phone: connected without phone."""
    provider = FakeProvider(details=InstanceDetails(connected=True, connected_phone=None))
    assert await run(provider, target()) is Seen.CONNECTED_WITHOUT_PHONE


async def test_provider_saying_disconnected_is_disconnected_without_more_calls() -> None:
    """status-instance connected=false: disconnected, nothing else asked."""
    provider = FakeProvider(status=InstanceStatus(connected=False))
    assert await run(provider, target(InstanceState.CONNECTED, PHONE)) is Seen.DISCONNECTED
    assert provider.operations() == ["status-instance"]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (ProviderTimeout(operation="status-instance", detail="read timeout"), Seen.UNREACHABLE),
        (
            ProviderUnavailable(operation="status-instance", detail="502 html", status_code=502),
            Seen.UNREACHABLE,
        ),
        (
            ProviderUnauthorized(operation="status-instance", detail="401", status_code=401),
            Seen.CREDENTIALS_REJECTED,
        ),
        (
            ProviderRejected(
                operation="status-instance", detail="400", status_code=400, message="erro"
            ),
            Seen.PROVIDER_REJECTED,
        ),
    ],
)
async def test_provider_failures_map_to_their_degraded_evidence(
    failure: ProviderTimeout | ProviderUnavailable | ProviderUnauthorized | ProviderRejected,
    expected: Seen,
) -> None:
    """Timeout/5xx/HTML: unreachable; 401/403: credentials; other refusals: rejected."""
    assert await run(FakeProvider(status=failure), target()) is expected


async def test_failed_phone_lookups_keep_a_known_phone_without_refreshing_it() -> None:
    """Status connected, both lookups fail, phone known: connected with the old phone."""
    failure = ProviderTimeout(operation="fetch-instance", detail="timeout")
    provider = FakeProvider(details=failure, device_info=failure)
    observation = await check_instance(
        provider,
        target(InstanceState.CONNECTED, PHONE, timedelta(hours=2)),
        now=NOW,
        source=EvidenceSource.TICK,
        phone_max_age=MAX_AGE,
    )
    assert observation.seen is Seen.CONNECTED
    assert not observation.phone_fresh


async def test_failed_phone_lookups_without_a_known_phone_are_unreachable() -> None:
    """Status connected, both lookups fail, no phone ever: we could not check."""
    failure = ProviderTimeout(operation="fetch-instance", detail="timeout")
    assert await run(FakeProvider(details=failure, device_info=failure), target()) is (
        Seen.UNREACHABLE
    )


async def test_a_forced_check_looks_up_the_phone_even_when_fresh() -> None:
    """Verifying a connected claim always asks fetch-instance."""
    provider = FakeProvider()
    await run(provider, target(InstanceState.CONNECTED, PHONE, timedelta(minutes=1)), force=True)
    assert provider.operations() == ["status-instance", "fetch-instance"]


def test_a_check_target_never_shows_its_token() -> None:
    """repr of the target (logs, tracebacks) leaves the token out."""
    assert "secret-token" not in repr(target())


@pytest.mark.parametrize("max_age", [timedelta(hours=1), timedelta(minutes=30), timedelta(days=1)])
def test_refresh_ages_are_within_max_age_and_spread_over_its_second_half(
    max_age: timedelta,
) -> None:
    """Each instance's phone refresh age is in [max_age / 2, max_age), the same on every call;
    1,200 ids of one shape fill each sixth of that half nearly evenly (a bulk registration's
    phones are looked up again over several ticks, not in one)."""
    ids = [f"H{n:06d}" for n in range(1200)]
    ages = [phone_refresh_age(i, max_age) for i in ids]
    assert all(max_age / 2 <= age < max_age for age in ages)
    assert ages == [phone_refresh_age(i, max_age) for i in ids]
    sixths = [int((age - max_age / 2) / (max_age / 12)) for age in ages]
    assert all(150 <= sixths.count(k) <= 250 for k in range(6)), [sixths.count(k) for k in range(6)]


async def test_a_phone_younger_than_its_refresh_age_is_not_looked_up() -> None:
    """Just below the instance's refresh age: status-instance only; at it: a lookup."""
    refresh = phone_refresh_age("I1", MAX_AGE)
    provider = FakeProvider()
    await run(provider, target(InstanceState.CONNECTED, PHONE, refresh - timedelta(seconds=1)))
    assert provider.operations() == ["status-instance"]
    await run(provider, target(InstanceState.CONNECTED, PHONE, refresh))
    assert provider.operations() == ["status-instance", "status-instance", "fetch-instance"]
