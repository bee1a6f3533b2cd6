"""Health's operator use cases over in-memory fakes of their ports (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    EvidenceSource,
    GetInstanceHistory,
    InstanceState,
    InstanceStateChanged,
)
from zapgate.health.operator_api import OperatorApi
from zapgate.runtime.clock import ManualClock

from .fakes import FakeProvider, FakeRepository

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _changed(instance_id: str, observed_at: datetime) -> InstanceStateChanged:
    return InstanceStateChanged(
        instance_id=instance_id,
        from_state=InstanceState.CONNECTED,
        to_state=InstanceState.DISCONNECTED,
        source=EvidenceSource.TICK,
        observed_at=observed_at,
    )


def _api(repo: FakeRepository) -> OperatorApi:
    return OperatorApi(
        store=repo, provider=FakeProvider(), clock=ManualClock(T0), cooldown=timedelta(minutes=5)
    )


async def test_history_lists_the_instances_own_changes_newest_first() -> None:
    """The history verb answers one instance's changes, newest observation first, at most
    `limit` of them; another instance's changes are not among them."""
    repo = FakeRepository()
    repo.add("a")
    repo.add("b")
    for minutes, instance_id in [(1, "a"), (2, "b"), (3, "a"), (5, "a")]:
        repo.transitions.append((_changed(instance_id, T0 + timedelta(minutes=minutes)), True))
    reply = await _api(repo).history(GetInstanceHistory(instance_id="a", limit=2))
    assert reply.ok
    assert [(t.instance_id, t.observed_at) for t in reply.transitions] == [
        ("a", T0 + timedelta(minutes=5)),
        ("a", T0 + timedelta(minutes=3)),
    ]


async def test_history_of_an_unknown_instance_is_refused_with_its_code() -> None:
    """An instance health does not know gets INSTANCE_UNKNOWN, not an empty history."""
    reply = await _api(FakeRepository()).history(GetInstanceHistory(instance_id="zz"))
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.code == ErrorCode.INSTANCE_UNKNOWN
