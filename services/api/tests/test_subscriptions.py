"""Webhook subscriptions' use cases over in-memory fakes: the destination check comes first."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zapgate.api.domain import Caller, EventType
from zapgate.api.outbound import Subscriptions
from zapgate.api.service import Refusal, RefusalKind
from zapgate.runtime.clock import ManualClock

from .fakes import FakeDestinations, FakeSubscriptions

pytestmark = pytest.mark.unit

CALLER = Caller(key_id="k1", name="loja", instances=frozenset({"loja-centro"}))
PUBLIC = "https://hooks.example.com/zapgate"
INTERNAL = "http://10.0.0.5/hook"


def _subscriptions() -> tuple[Subscriptions, FakeSubscriptions, FakeDestinations]:
    store, destinations = FakeSubscriptions(), FakeDestinations(refused={INTERNAL})
    clock = ManualClock(datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
    return Subscriptions(store, clock, None, destinations), store, destinations


async def test_a_subscription_to_an_allowed_destination_is_stored_with_a_secret() -> None:
    """The URL is checked, then stored for the caller's key with its events and a new secret."""
    subscriptions, store, destinations = _subscriptions()

    made = await subscriptions.create(CALLER, PUBLIC, [EventType.MESSAGE_RECEIVED])

    assert destinations.checked == [PUBLIC]
    assert list(store.subscriptions.values()) == [made]
    assert (made.key_id, made.url, made.events) == (
        "k1",
        PUBLIC,
        frozenset({EventType.MESSAGE_RECEIVED}),
    )
    assert made.secret.startswith("whsec_")


async def test_a_refused_destination_is_answered_with_its_code_and_nothing_is_stored() -> None:
    """A URL the destination check refuses raises its coded 422 refusal; the store stays empty."""
    subscriptions, store, _destinations = _subscriptions()

    with pytest.raises(Refusal) as refused:
        await subscriptions.create(CALLER, INTERNAL, [EventType.MESSAGE_RECEIVED])

    assert refused.value.kind is RefusalKind.UNPROCESSABLE
    assert refused.value.problem.code == "WEBHOOK_DESTINATION_FORBIDDEN"
    assert store.subscriptions == {}
