"""The console's listing verbs over the real sender app: sends by instance, stuck counts."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from faststream import TestApp
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import (
    CountStuck,
    ListSends,
    SendListReply,
    SendMessage,
    SendStatus,
    StuckCountsReply,
    TextContent,
)
from zapgate.runtime.clock import ManualClock
from zapgate.sender.app import create_app
from zapgate.sender.settings import SenderSettings

if TYPE_CHECKING:
    from nats.aio.client import Client

    from zapgate.wapi.client import WapiClient
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

PHONE = "5511999990000"


def command(command_id: str) -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id="list-1",
        phone="5511988887777",
        body=TextContent(message=f"msg {command_id}"),
    )


async def ask(nc: Client, subject: str, request: Any, reply: Any) -> Any:
    answer = await nc.request(subject, request.model_dump_json().encode(), timeout=10)
    return reply.model_validate_json(answer.data)


async def test_sends_are_listed_by_status_and_stuck_ones_are_counted(  # noqa: PLR0913, PLR0917 - fixtures
    nats_url: str,
    database_url: str,
    wapi_client: WapiClient,
    wapi_simulator: Simulator,
    clock: ManualClock,
    nc: Client,
    health: Any,
) -> None:
    """A failed send lists under `failed` with its pt-BR error; a sent one becomes stuck once
    the stuck window has passed, listed under `stuck` and counted for its instance."""
    settings = SenderSettings(
        environment="test",
        nats_url=nats_url,
        database_url=SecretStr(database_url),
        probe_host="127.0.0.1",
        probe_port=0,
        min_send_gap=timedelta(0),
        provider_backoff=timedelta(0),
        sweep_every=None,
        stuck_window=timedelta(minutes=10),
    )
    app = create_app(settings, wapi=wapi_client, clock=clock, configure_logs=False)
    wapi_simulator.add_instance("list-1", "tok-sender-test", phone=PHONE)
    async with TestApp(app):
        client = SenderClient(nc)
        await health.put("list-1", InstanceState.DEGRADED, reason="SESSION_INCOMPLETE")
        failed = await client.send(command("list-failed"), timeout=10)
        await health.put("list-1", InstanceState.CONNECTED)
        clock.advance(timedelta(seconds=1))
        sent = await client.send(command("list-sent"), timeout=10)
        assert (failed.status, sent.status) == (SendStatus.FAILED, SendStatus.SENT)

        every = await ask(
            nc, subjects.API_SENDER_LIST, ListSends(instance_id="list-1"), SendListReply
        )
        only_failed = await ask(
            nc,
            subjects.API_SENDER_LIST,
            ListSends(instance_id="list-1", statuses=[SendStatus.FAILED]),
            SendListReply,
        )
        stuck_before = await ask(
            nc, subjects.API_SENDER_LIST, ListSends(instance_id="list-1", stuck=True), SendListReply
        )
        clock.advance(timedelta(minutes=11))
        stuck_after = await ask(
            nc, subjects.API_SENDER_LIST, ListSends(instance_id="list-1", stuck=True), SendListReply
        )
        counts = await ask(nc, subjects.API_SENDER_STUCK_COUNTS, CountStuck(), StuckCountsReply)

    assert [s.command_id for s in every.sends] == ["list-sent", "list-failed"]
    assert [s.command_id for s in only_failed.sends] == ["list-failed"]
    assert only_failed.sends[0].error is not None
    assert only_failed.sends[0].error.code == "SESSION_INCOMPLETE"
    assert only_failed.sends[0].failed_at is not None
    assert stuck_before.sends == []
    assert [s.command_id for s in stuck_after.sends] == ["list-sent"]
    assert stuck_after.sends[0].sent_at is not None
    assert counts.counts == {"list-1": 1}


async def test_a_malformed_list_request_gets_invalid_command(
    nats_url: str,
    database_url: str,
    wapi_client: WapiClient,
    clock: ManualClock,
    nc: Client,
) -> None:
    """A limit over 200 is refused with a coded answer, never a timeout."""
    settings = SenderSettings(
        environment="test",
        nats_url=nats_url,
        database_url=SecretStr(database_url),
        probe_host="127.0.0.1",
        probe_port=0,
        sweep_every=None,
    )
    app = create_app(settings, wapi=wapi_client, clock=clock, configure_logs=False)
    async with TestApp(app):
        answer = await nc.request(
            subjects.API_SENDER_LIST, b'{"instance_id": "x", "limit": 5000}', timeout=10
        )
    reply = SendListReply.model_validate_json(answer.data)
    assert (reply.ok, reply.error.code if reply.error else None) == (False, "INVALID_COMMAND")
