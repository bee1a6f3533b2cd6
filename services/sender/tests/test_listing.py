"""The console's listing verbs over an in-memory listing: decode, ask with the clock, answer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.sending import (
    CountStuck,
    ListSends,
    MessageKind,
    SendListReply,
    SendStatus,
    SendSummary,
    StuckCountsReply,
)
from zapgate.sender.handlers import HandlerOptions, SenderHandlers
from zapgate.sender.service import StuckPolicy

from .fakes import FakeListing, Fakes

pytestmark = pytest.mark.unit

WINDOW = timedelta(minutes=7)


def _handlers(fakes: Fakes, listing: FakeListing) -> SenderHandlers:
    return SenderHandlers(
        fakes.deps, HandlerOptions(stuck=StuckPolicy(window=WINDOW)), listing=listing
    )


async def test_the_list_verb_answers_the_instances_sends_as_of_now_and_the_stuck_window() -> None:
    """`on_list_sends` asks the listing for the instance at the clock's now with the handlers'
    stuck window, and answers its sends."""
    fakes = Fakes()
    sent = SendSummary(
        command_id="c-1",
        instance_id="loja",
        phone="5511988887777",
        kind=MessageKind.TEXT,
        status=SendStatus.SENT,
        created_at=fakes.clock.now(),
    )
    listing = FakeListing(sends_by_instance={"loja": [sent]})

    reply = await _handlers(fakes, listing).on_list_sends(
        ListSends(instance_id="loja").model_dump_json().encode()
    )

    assert reply == SendListReply(ok=True, sends=[sent])
    assert listing.queries == [("loja", fakes.clock.now(), WINDOW)]


async def test_the_stuck_count_verb_answers_the_listings_counts() -> None:
    """`on_count_stuck` answers the stuck sends per instance the listing counts."""
    fakes = Fakes()
    listing = FakeListing(counts={"loja": 2})

    reply = await _handlers(fakes, listing).on_count_stuck(CountStuck().model_dump_json().encode())

    assert reply == StuckCountsReply(ok=True, counts={"loja": 2})


async def test_a_malformed_list_request_is_refused_without_asking_the_listing() -> None:
    """A body that is not a `ListSends` gets INVALID_COMMAND and no query runs."""
    listing = FakeListing()

    reply = await _handlers(Fakes(), listing).on_list_sends(b'{"limit": "many"}')

    assert (reply.ok, reply.error.code if reply.error else None) == (
        False,
        ErrorCode.INVALID_COMMAND,
    )
    assert listing.queries == []
