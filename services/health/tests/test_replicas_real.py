"""Three replicas, the server's own schedule, and the request API/CLI, over real servers."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from datetime import timedelta

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.health import (
    HealthReply,
    InstanceListReply,
    InstanceState,
    RegisterInstance,
    RegistryReply,
)
from zapgate.health import cli
from zapgate.wapi.simulator.models import RestartMode

from .conftest import TOKEN, Harness

pytestmark = pytest.mark.real

PHONE = "5511999990000"


def checks_per_instance(harness: Harness) -> Counter[str | None]:
    return Counter(c.instance_id for c in harness.simulator.calls(operation="status-instance"))


async def run_cli(harness: Harness, out: io.StringIO, *args: str) -> int:
    # The CLI runs its own event loop, so it runs in a thread beside the service's loop.
    return await asyncio.to_thread(cli.main, ["--nats-url", harness.nats_url, *args], out=out)


async def test_three_replicas_check_each_instance_once_per_tick_and_restart_once(
    harness: Harness,
) -> None:
    """One tick over three replicas: one check per instance, one restart per cooldown."""
    services = [await harness.start() for _ in range(3)]
    ids = [f"I{n}" for n in range(9)]
    await harness.register(services[0], *ids[:-1], phone=PHONE)
    await harness.register(services[0], ids[-1], phone=PHONE, connected=False)
    harness.simulator.set_restart(ids[-1], RestartMode.NEVER)

    await harness.publish_tick()
    report = await harness.next_tick()
    assert report.checked == len(ids)
    status_calls = Counter(
        c.instance_id for c in harness.simulator.calls(operation="status-instance")
    )
    assert status_calls == dict.fromkeys(ids, 1)
    assert len(harness.simulator.calls(operation="restart")) == 1

    # Three ticks at once on three replicas, ten minutes later: each instance once, no restart.
    harness.clock.advance(timedelta(minutes=10))
    for _ in range(3):
        await harness.publish_tick()
    reports = [await harness.next_tick() for _ in range(3)]
    assert sum(r.checked for r in reports) == len(ids)
    status_calls = Counter(
        c.instance_id for c in harness.simulator.calls(operation="status-instance")
    )
    assert status_calls == dict.fromkeys(ids, 2)
    assert len(harness.simulator.calls(operation="restart")) == 1

    # Concurrent disconnected observations on every replica: still one restart per cooldown.
    harness.clock.advance(timedelta(minutes=31))
    await asyncio.gather(*(s.check_now(ids[-1]) for s in services))
    assert len(harness.simulator.calls(operation="restart")) == 2


async def test_the_server_scheduled_tick_reaches_the_consumer(harness: Harness) -> None:
    """A 1 s message schedule installed at startup makes the NATS server deliver a tick."""
    service = await harness.start(install_schedule=True, tick_interval=timedelta(seconds=1))
    await harness.register(service, "I1", phone=PHONE)
    report = await harness.next_tick(timeout=30)
    while report.checked == 0:  # a tick that fired before the instance was registered
        report = await harness.next_tick(timeout=30)
    assert report.checked == 1
    schedule = await harness.js.get_last_msg(subjects.STREAM_TICKS, subjects.HEALTH_TICK_SCHEDULE)
    assert (schedule.headers or {}).get("Nats-Schedule") == "@every 1s"


async def test_the_request_api_registers_lists_pauses_and_removes_without_leaking_tokens(
    harness: Harness,
) -> None:
    """register -> list (no token) -> duplicate refused -> pause -> health -> remove."""
    await harness.start()
    harness.simulator.add_instance("I1", TOKEN, phone=PHONE)
    register = RegisterInstance.model_validate(
        {"instance_id": "I1", "display_name": "Loja 1", "token": TOKEN}
    )
    reply = await harness.nc.request(
        subjects.API_HEALTH_REGISTER, register.model_dump_json().encode(), timeout=10
    )
    assert RegistryReply.model_validate_json(reply.data).ok
    again = await harness.nc.request(
        subjects.API_HEALTH_REGISTER, register.model_dump_json().encode(), timeout=10
    )
    refused = RegistryReply.model_validate_json(again.data)
    assert refused.error is not None
    assert refused.error.code == "INSTANCE_EXISTS"
    listing = await harness.nc.request(subjects.API_HEALTH_LIST, b"{}", timeout=10)
    assert TOKEN.encode() not in listing.data
    assert [
        i.instance_id for i in InstanceListReply.model_validate_json(listing.data).instances
    ] == ["I1"]
    bad = await harness.nc.request(subjects.API_HEALTH_PAUSE, b"{not json", timeout=10)
    assert RegistryReply.model_validate_json(bad.data).error is not None

    out = io.StringIO()
    assert (
        await asyncio.to_thread(cli.main, ["--nats-url", harness.nats_url, "check", "I1"], out=out)
        == 0
    )
    assert "connected" in out.getvalue()
    assert (
        await asyncio.to_thread(
            cli.main, ["--nats-url", harness.nats_url, "instances", "pause", "I1"], out=out
        )
        == 0
    )
    health = await harness.nc.request(subjects.API_HEALTH_GET, b'{"instance_id": "I1"}', timeout=10)
    [state] = HealthReply.model_validate_json(health.data).instances
    assert state.paused
    assert state.state is InstanceState.CONNECTED
    assert state.phone == PHONE
    status = io.StringIO()
    assert (
        await asyncio.to_thread(cli.main, ["--nats-url", harness.nats_url, "status"], out=status)
        == 0
    )
    assert "I1\tconnected" in status.getvalue()
    assert TOKEN not in status.getvalue() + out.getvalue()
    assert (
        await asyncio.to_thread(
            cli.main, ["--nats-url", harness.nats_url, "instances", "remove", "I1"], out=out
        )
        == 0
    )
    missing = io.StringIO()
    assert (
        await asyncio.to_thread(
            cli.main, ["--nats-url", harness.nats_url, "status", "I1"], out=missing
        )
        == 1
    )
    assert "INSTANCE_UNKNOWN" in missing.getvalue()
