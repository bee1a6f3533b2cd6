"""A three-node nats-server cluster from the wheel: R3 streams, a lost node, replicas moved."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import nats
import pytest

from zapgate.contracts import subjects
from zapgate.runtime.provision_cli import provision
from zapgate.runtime.topology import ALL_STREAMS

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client

    from zapgate.devservers.nats import NatsCluster
    from zapgate.devservers.nats_auth import DevCredentials

pytestmark = pytest.mark.real

POLL_S = 0.1


async def stream_info(nc: Client, stream: str) -> dict[str, Any]:
    return await api_info(nc, f"STREAM.INFO.{stream}")


async def api_info(nc: Client, verb: str) -> dict[str, Any]:
    reply = await nc.request(f"$JS.API.{verb}", b"", timeout=5)
    info: dict[str, Any] = json.loads(reply.data)
    return info


def current_copies(info: dict[str, Any]) -> int:
    """Copies that hold the stream now: the leader plus every follower that caught up."""
    cluster = info.get("cluster") or {}
    followers = [peer for peer in cluster.get("replicas") or [] if peer.get("current")]
    return (1 if cluster.get("leader") else 0) + len(followers)


async def wait_copies(nc: Client, stream: str, copies: int, *, consumer: str = "") -> None:
    """Bounded poll of STREAM.INFO (CONSUMER.INFO with `consumer`) until `copies` peers hold
    it and are current (no event exists for a finished catch-up)."""
    verb = f"CONSUMER.INFO.{stream}.{consumer}" if consumer else f"STREAM.INFO.{stream}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        info = await api_info(nc, verb)
        if current_copies(info) == copies:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"{verb}: {info.get('cluster')}")
        await asyncio.sleep(POLL_S)


async def test_three_nodes_elect_a_meta_leader_and_refuse_anonymous_clients(
    nats_cluster: Callable[..., NatsCluster],
) -> None:
    """Every node knows the meta leader when the fixture returns; the topology is R3 at once;
    auth is on on every node."""
    cluster = nats_cluster()
    assert len({node.port for node in cluster.nodes}) == 3
    nc = await nats.connect(servers=cluster.urls, connect_timeout=5)
    try:
        for spec in ALL_STREAMS:
            await wait_copies(nc, spec.name, 3)
    finally:
        await nc.close()
    for node in cluster.nodes:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(node.anonymous_url, connect_timeout=5, allow_reconnect=False)


async def test_provision_moves_r1_streams_to_r3_and_they_survive_a_lost_node(
    nats_cluster: Callable[..., NatsCluster], nats_credentials: DevCredentials
) -> None:
    """Streams and consumers made R1 become R3 when provisioned with 3 replicas (a stream update,
    their messages kept); then the node that led a stream is SIGKILLed and the stream still
    answers reads and stores new publishes; the node rejoins."""
    cluster = nats_cluster(replicas=1)
    nc = await nats.connect(servers=cluster.urls, connect_timeout=5, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream(timeout=10)
        first = await js.publish("zg.send.outcome.c1", b"before", stream=subjects.STREAM_SEND)
        await js.add_consumer(subjects.STREAM_SEND, durable_name="probe", filter_subject=">")
        assert current_copies(await stream_info(nc, subjects.STREAM_SEND)) == 1

        # Provision runs as the admin user, as compose's one-shot `migrate` step does.
        await provision(cluster.urls[0], nats_credentials.seed("admin"), replicas=3)

        for spec in ALL_STREAMS:
            await wait_copies(nc, spec.name, 3)
            assert (await stream_info(nc, spec.name))["config"]["num_replicas"] == 3
        # A durable inherits the stream's replicas (num_replicas 0) and follows it, later.
        await wait_copies(nc, subjects.STREAM_SEND, 3, consumer="probe")

        leader = (await stream_info(nc, subjects.STREAM_SEND))["cluster"]["leader"]
        lost = next(i for i, node in enumerate(cluster.nodes) if leader.endswith(f"-{i + 1}"))
        survivor = await nats.connect(cluster.url_of((lost + 1) % 3), connect_timeout=5)
        elected = await survivor.subscribe(
            f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{subjects.STREAM_SEND}"
        )
        await survivor.flush()
        cluster.kill(lost)
        # The two nodes left elect a new leader for the stream: wait for that advisory.
        await elected.next_msg(timeout=30)
        js = survivor.jetstream(timeout=10)
        second = await js.publish("zg.send.outcome.c2", b"after", stream=subjects.STREAM_SEND)
        assert (await js.get_msg(subjects.STREAM_SEND, first.seq)).data == b"before"
        assert (await js.get_msg(subjects.STREAM_SEND, second.seq)).data == b"after"
        await survivor.close()

        await asyncio.to_thread(cluster.restart, lost)
        await wait_copies(nc, subjects.STREAM_SEND, 3)
    finally:
        await nc.close()
