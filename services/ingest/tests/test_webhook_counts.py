"""The webhook counts use case over an in-memory counter: the window, the disposition, the order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.contracts.webhooks import CountWebhooks, WebhookDisposition
from zapgate.ingest.ports import ArchivedCount
from zapgate.ingest.service import count_webhooks
from zapgate.runtime.clock import ManualClock

from .fakes import FakeWebhookCounter

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)


async def test_counts_cover_the_window_by_the_clock_and_are_sorted_largest_first() -> None:
    """The counter is asked for `[now - window_s, now]`; routed, unrouted and quarantined groups
    keep their disposition, largest count first."""
    counter = FakeWebhookCounter(
        [
            ArchivedCount(kind="message_status", code=None, count=2, last_received_at=NOW),
            ArchivedCount(kind="unrouted", code=None, count=1, last_received_at=NOW),
            ArchivedCount(
                kind="quarantined", code="WEBHOOK_NOT_JSON", count=5, last_received_at=NOW
            ),
        ]
    )

    reply = await count_webhooks(
        CountWebhooks(instance_id="loja", window_s=600), counter, ManualClock(NOW)
    )

    assert counter.windows == [("loja", NOW - timedelta(minutes=10), NOW)]
    assert (reply.ok, reply.since, reply.until) == (True, NOW - timedelta(minutes=10), NOW)
    assert [(c.kind, c.disposition, c.count) for c in reply.counts] == [
        ("quarantined", WebhookDisposition.QUARANTINED, 5),
        ("message_status", WebhookDisposition.ROUTED, 2),
        ("unrouted", WebhookDisposition.UNROUTED, 1),
    ]


async def test_an_instance_with_nothing_archived_gets_an_empty_list() -> None:
    """A quiet (or unknown) instance is not an error: ok with no counts."""
    reply = await count_webhooks(
        CountWebhooks(instance_id="calada"), FakeWebhookCounter(), ManualClock(NOW)
    )

    assert (reply.ok, reply.counts) == (True, [])
