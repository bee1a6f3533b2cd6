"""nats-server from the wheel: starts, runs JetStream, survives restarts, runs schedules."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING

import nats
import pytest
from nats.js.api import StreamConfig

from zapgate.devservers.nats import MIN_VERSION, NatsServer, NatsServerError
from zapgate.runtime.topology import ALL_STREAMS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.real


def test_session_server_is_at_least_the_version_with_message_schedules(
    nats_server: NatsServer,
) -> None:
    """The wheel's nats-server is new enough for message schedules."""
    assert nats_server.version[:2] >= MIN_VERSION
    assert nats_server.anonymous_url == f"nats://127.0.0.1:{nats_server.port}"


async def test_jetstream_stores_a_published_message(nats_url: str) -> None:
    """A publish to a stream subject is acknowledged with a sequence."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="DEV_T1", subjects=["dev.t1"])
    ack = await js.publish("dev.t1", b"hello", stream="DEV_T1")
    assert ack.seq == 1
    await nc.close()


async def test_nats_url_starts_each_test_with_only_the_empty_topology(nats_url: str) -> None:
    """Streams created by earlier tests are gone; the topology's streams exist, empty."""
    nc = await nats.connect(nats_url)
    infos = await nc.jetstream().streams_info()
    await nc.close()
    assert {info.config.name for info in infos} == {spec.name for spec in ALL_STREAMS}
    assert all(info.state.messages == 0 for info in infos)


async def test_the_session_server_refuses_anonymous_connections(nats_server: NatsServer) -> None:
    """Auth is on for every test: no credentials, no connection."""
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.anonymous_url, connect_timeout=5, allow_reconnect=False)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_restart_keeps_port_and_stored_messages(
    fault_nats_server: Callable[..., NatsServer], *, kill: bool
) -> None:
    """A message acked before a stop or a kill is still there after the restart, same URL."""
    server = fault_nats_server()
    url = server.url
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(name="KEEP", subjects=["keep"])
    await nc.jetstream().publish("keep", b"durable", stream="KEEP")
    await nc.close()

    await asyncio.to_thread(server.restart, kill=kill)

    assert server.url == url
    nc = await nats.connect(url)
    msg = await nc.jetstream().get_last_msg("KEEP", "keep")
    assert msg.data == b"durable"
    await nc.close()


def test_kill_ends_the_process(fault_nats_server: Callable[..., NatsServer]) -> None:
    """After kill() the server is gone and its port refuses connections."""
    server = fault_nats_server()
    server.kill()
    assert not server.is_running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=2)


def test_fatal_start_error_is_reported_with_the_log(tmp_path: Path) -> None:
    """A server that cannot start fails fast with its fatal log line."""
    config = tmp_path / "bad.conf"
    config.write_text("this is { not a valid config")
    with pytest.raises(NatsServerError, match="did not start"):
        NatsServer(tmp_path / "store", config_file=config, start_timeout=5).start()


async def test_message_schedule_publishes_to_its_target(nats_url: str) -> None:
    """A `Nats-Schedule: @every 1s` message makes the server publish on the target subject."""
    nc = await nats.connect(nats_url)
    config = {
        "name": "DEV_SCHED",
        "subjects": ["dev.sched.>"],
        "allow_msg_schedules": True,
        "storage": "memory",
    }
    # Raw API so this proves the server feature independently of the client's StreamConfig.
    reply = await nc.request("$JS.API.STREAM.CREATE.DEV_SCHED", json.dumps(config).encode())
    assert "error" not in json.loads(reply.data), reply.data
    created = StreamConfig.from_response(json.loads(reply.data)["config"])
    assert created.allow_msg_schedules is True

    js = nc.jetstream()
    # Generated messages are stored in the stream, not sent on core NATS: read them from it.
    target = await js.pull_subscribe("dev.sched.tick", stream="DEV_SCHED")
    await js.publish(
        "dev.sched.schedule",
        b"tick",
        stream="DEV_SCHED",
        headers={"Nats-Schedule": "@every 1s", "Nats-Schedule-Target": "dev.sched.tick"},
    )
    [msg] = await target.fetch(1, timeout=5)
    assert msg.data == b"tick"
    assert msg.headers is not None
    assert msg.headers.get("Nats-Scheduler") == "dev.sched.schedule"
    await nc.close()
