"""The system on a three-node NATS cluster with R3 streams, replicas of sender and ingest, and
faults in the middle of the traffic (issue #18).

3 sender replicas share the 8 send partitions, 2 ingest replicas take webhooks, one health
replica owns the instances. 50 instances x 40 sends and a webhook burst to both ingest
replicas run while the ZG_SEND stream's leader node is SIGKILLed, one sender replica is
SIGKILLed and another SIGSTOPped until the last one has taken every partition that has work
left (then resumed). What must hold: every command answered once (one decision on the bus; a
redelivery may repeat it as a replay), at most one provider call per command (exactly one for
each `sent`), each instance's calls in command order and at least the minimum gap apart as the
provider received them, every accepted webhook streamed once and archived once.

Setup is what costs (six Python processes starting at once): the cluster is provisioned once
by the fixture, the processes start in parallel, instances are checked with one request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
import stamina
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError

from tests.e2e.conftest import (
    HOST,
    SECRET,
    make_stack,
    read_stream,
    register,
    repeated,
    unique,
    wait_until,
)
from zapgate.contracts import subjects
from zapgate.contracts.health import CheckNow, CheckNowReply, InstanceState
from zapgate.contracts.sending import SendMessage, SendOutcome, SendStatus, TextContent
from zapgate.devservers.postgres import free_port
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import query

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from tests.e2e.conftest import Stack
    from zapgate.devservers.nats import NatsCluster
    from zapgate.wapi.simulator.handle import Simulator
    from zapgate.wapi.simulator.models import CallRecord
    from zapgate.wapi.simulator.server import SimulatorServer

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(180)]

INSTANCES = 50
SENDS = 40
WEBHOOKS_PER_REPLICA = 120
TOKEN = "e2e-cluster-token"
CUSTOMER = "5511966665555"
MIN_GAP_S = 0.05
# A paused or dead replica's partitions move after 1.5 x the ack wait (the pinned group's
# priority timeout); a command it left `sending` is decided after the lease.
SENDER_ENV = {
    "ZAPGATE_SENDER_MIN_SEND_GAP": f"PT{MIN_GAP_S}S",
    "ZAPGATE_SENDER_COMMAND_ACK_WAIT": "PT4S",
    "ZAPGATE_SENDER_SENDING_LEASE": "PT3S",
    "ZAPGATE_SENDER_SWEEP_EVERY": "PT1S",
    "ZAPGATE_SENDER_PROVIDER_BACKOFF": "PT0.05S",
    "ZAPGATE_SENDER_STREAM_REPLICAS": "3",
}
SENDERS = ("sender1", "sender2", "sender3")
INGESTS = ("ingest1", "ingest2")


class Outcomes:
    """Final decisions on the bus (`zg.send.outcome.*`), woken when every command has one."""

    def __init__(self, command_ids: set[str]) -> None:
        self.expected = command_ids
        self.decided: dict[str, SendOutcome] = {}
        self._all = asyncio.Event()

    async def on_outcome(self, message: Msg) -> None:
        outcome = SendOutcome.model_validate_json(message.data)
        if outcome.status.is_final_decision and outcome.command_id in self.expected:
            self.decided.setdefault(outcome.command_id, outcome)
            if len(self.decided) == len(self.expected):
                self._all.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._all.wait(), timeout)
        except TimeoutError:
            missing = sorted(self.expected - set(self.decided))
            raise TimeoutError(f"{len(missing)} commands undecided, e.g. {missing[:5]}") from None


def command_of(instance_id: str, n: int) -> SendMessage:
    """The instance's `n`-th command: its id sorts in command order, its text carries the id."""
    command_id = f"{instance_id}-{n:02d}"
    return SendMessage(
        command_id=command_id,
        instance_id=instance_id,
        phone=CUSTOMER,
        body=TextContent(message=f"{command_id} {n}"),
    )


async def publish_in_waves(nc: Client, waves: list[list[SendMessage]]) -> None:
    """Publish wave after wave (one command per instance in each): an instance's commands are
    stored in their order. A publish the cluster did not acknowledge (a node lost, a leader
    being elected) is published again under the same `Nats-Msg-Id`: stored once."""
    js = nc.jetstream(timeout=5)

    async def publish(command: SendMessage) -> None:
        # While the killed node's streams elect leaders, a publish may time out: try again with
        # backoff (the same Nats-Msg-Id, so a publish that did land is not stored twice).
        async for attempt in stamina.retry_context(
            on=(NatsTimeoutError, NoRespondersError, ServiceUnavailableError),
            attempts=20,
            wait_initial=0.1,
            wait_max=1.0,
        ):
            with attempt:
                await js.publish(
                    subjects.send_command_subject(command.instance_id),
                    command.model_dump_json().encode(),
                    stream=subjects.STREAM_SEND,
                    headers={subjects.MSG_ID_HEADER: command.command_id},
                )

    for wave in waves:
        await asyncio.gather(*(publish(command) for command in wave))


async def post_webhooks(url: str, bodies: list[dict[str, Any]]) -> set[str]:
    """POST every body at once (at most 20 in flight); the message ids answered 2xx."""
    limit = asyncio.Semaphore(20)
    async with httpx.AsyncClient(timeout=30) as http:

        async def post(body: dict[str, Any]) -> str | None:
            async with limit:
                try:
                    response = await http.post(url, json=body)
                except httpx.HTTPError:
                    return None
            return str(body["messageId"]) if response.is_success else None

        answers = await asyncio.gather(*(post(body) for body in bodies))
    return {answer for answer in answers if answer is not None}


async def partition_owners(database_url: str) -> dict[int, str]:
    rows = await query(database_url, "SELECT partition, owner FROM send_partitions")
    return {int(row.partition): str(row.owner) for row in rows}


async def consumer_info(nc: Client, partition: int) -> dict[str, Any]:
    """The partition durable's state: pending, unacknowledged, waiting pulls, the pin."""
    durable = f"sender-commands-p{partition}"
    reply = await nc.request(f"$JS.API.CONSUMER.INFO.{subjects.STREAM_SEND}.{durable}", b"", 5)
    info = json.loads(reply.data)
    keys = ("num_pending", "num_ack_pending", "num_waiting", "priority_groups", "cluster")
    return {key: info.get(key) for key in keys}


async def partition_has_work(nc: Client, partition: int) -> bool:
    """Commands of the partition not yet delivered, or delivered and not acknowledged."""
    info = await consumer_info(nc, partition)
    return int(info["num_pending"] or 0) + int(info["num_ack_pending"] or 0) > 0


async def stream_leader(nc: Client, stream: str) -> str:
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    return str(json.loads(reply.data)["cluster"]["leader"])


@dataclass
class System:
    """The cluster, the service processes and where to reach them."""

    cluster: NatsCluster
    stack: Stack
    webhook_urls: dict[str, str]
    owners: dict[str, str]
    """`send_partitions.owner` (host:pid) of each sender replica."""

    def owner_of(self, replica: str) -> str:
        return next(owner for owner, name in self.owners.items() if name == replica)


def start_system(
    nats_cluster: Callable[..., NatsCluster],
    database_url: str,
    simulator_url: str,
    logs: Path,
) -> System:
    """Three nodes with R3 streams, then every process at once, each on one node (round robin:
    it learns the others from it)."""
    cluster = nats_cluster()
    names = ("health1", *INGESTS, *SENDERS)
    per_process = {
        name: {f"ZAPGATE_{name.rstrip('0123456789').upper()}_NATS_URL": cluster.url_of(i % 3)}
        for i, name in enumerate(names)
    }
    ports = {name: free_port(HOST) for name in INGESTS}
    for name, port in ports.items():
        per_process[name]["ZAPGATE_INGEST_HTTP_PORT"] = str(port)
    stack = make_stack(
        cluster.url_of(0),
        database_url,
        simulator_url,
        logs,
        sender=SENDER_ENV,
        health={"ZAPGATE_HEALTH_TICK_INTERVAL": "PT1H", "ZAPGATE_HEALTH_STREAM_REPLICAS": "3"},
        ingest={"ZAPGATE_INGEST_STREAM_REPLICAS": "3"},
        **per_process,
    )
    try:
        stack.start(*names)
    except BaseException:
        stack.stop()
        raise
    return System(
        cluster=cluster,
        stack=stack,
        webhook_urls={
            name: f"http://{HOST}:{port}/webhooks/{SECRET}" for name, port in ports.items()
        },
        owners={f"{socket.gethostname()}:{stack.processes[name].pid}": name for name in SENDERS},
    )


async def node_leading(nc: Client, system: System, stream: str) -> int:
    """Index of the node that leads `stream` now."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    leader = str(json.loads(reply.data)["cluster"]["leader"])
    return next(
        i for i in range(len(system.cluster.nodes)) if leader == f"{system.cluster.name}-{i + 1}"
    )


async def register_all(nc: Client, instance_ids: list[str]) -> None:
    """Register every instance with health and check them all once: each is connected."""
    await asyncio.gather(*(register(nc, instance_id, TOKEN) for instance_id in instance_ids))
    answer = await nc.request(
        subjects.API_HEALTH_CHECK_NOW, CheckNow().model_dump_json().encode(), timeout=30
    )
    checked = CheckNowReply.model_validate_json(answer.data).checked
    ours = set(instance_ids)
    assert Counter(c.state for c in checked if c.instance_id in ours) == {
        InstanceState.CONNECTED: len(instance_ids)
    }


async def traffic_across_a_lost_node(  # noqa: PLR0913 - the scenario's parts, by keyword
    nc: Client,
    system: System,
    simulator: Simulator,
    *,
    node: int,
    waves: list[list[SendMessage]],
    bodies: dict[str, list[dict[str, Any]]],
) -> set[str]:
    """Publish every command; once sends flow, a webhook burst to both ingest replicas with
    `node` SIGKILLed in it, then the rest of the webhooks. Returns the accepted message ids."""
    publishing = asyncio.create_task(publish_in_waves(nc, waves))
    await simulator.wait_for_calls(operation="send-text", count=200, timeout=60)
    half = WEBHOOKS_PER_REPLICA // 2
    during, _ = await asyncio.gather(
        asyncio.gather(
            *(post_webhooks(system.webhook_urls[name], bodies[name][:half]) for name in INGESTS)
        ),
        asyncio.to_thread(system.cluster.kill, node),
    )
    after = await asyncio.gather(
        *(post_webhooks(system.webhook_urls[name], bodies[name][half:]) for name in INGESTS)
    )
    await publishing
    return set().union(*during, *after)


async def lose_two_senders(nc: Client, system: System) -> tuple[str, str]:
    """SIGKILL the replica holding most partitions and SIGSTOP another one that holds some;
    once the last replica holds every partition that has work left, SIGCONT the paused one.
    Returns (killed, paused)."""
    database_url = system.stack.database_url

    async def held() -> Counter[str]:
        return Counter((await partition_owners(database_url)).values())

    async def none_with_work_held_by(replicas: set[str]) -> bool:
        """A pin moves with the next delivery: a partition with nothing left to deliver may
        stay with a lost replica, harmlessly."""
        lost = {system.owner_of(replica) for replica in replicas}
        for partition, owner in (await partition_owners(database_url)).items():
            if owner in lost and await partition_has_work(nc, partition):
                return False
        return True

    holding = await held()
    killed, *others = sorted(SENDERS, key=lambda name: -holding[system.owner_of(name)])
    system.stack.processes[killed].kill()
    if holding[system.owner_of(others[0])] == 0:
        # One replica held everything: let the other two take its partitions first.
        await wait_until(
            lambda: none_with_work_held_by({killed}), timeout=45, what="the killed one's moved"
        )
        holding = await held()
        others.sort(key=lambda name: -holding[system.owner_of(name)])
    paused, survivor = others
    assert holding[system.owner_of(paused)] > 0, holding
    system.stack.processes[paused].signal(signal.SIGSTOP)
    try:
        await wait_until(
            lambda: none_with_work_held_by({killed, paused}),
            timeout=45,
            what=f"{survivor} holds every partition with work",
        )
    except TimeoutError as timeout:
        owners = await partition_owners(database_url)
        stuck = {
            k: await consumer_info(nc, k)
            for k, owner in owners.items()
            if owner != system.owner_of(survivor)
        }
        raise TimeoutError(f"{timeout}; not moved: {stuck}") from None
    finally:
        system.stack.processes[paused].signal(signal.SIGCONT)
    return killed, paused


async def webhooks_archived(database_url: str, count: int) -> None:
    async def all_archived() -> bool:
        rows = await query(database_url, "SELECT count(*) AS n FROM webhook_payloads")
        return int(rows[0].n) >= count

    await wait_until(all_archived, timeout=60, what="every accepted webhook archived")


async def test_three_nodes_three_senders_two_ingests_with_a_node_and_two_senders_lost(
    nats_cluster: Callable[..., NatsCluster],
    database_url: str,
    wapi_simulator_server: SimulatorServer,
    tmp_path: Path,
) -> None:
    """2,000 sends and 240 webhooks across a lost node, a killed and a paused sender."""
    simulator: Simulator = wapi_simulator_server.simulator
    simulator.reset()
    prefix = unique("cl")
    instance_ids = [f"{prefix}-{n:02d}" for n in range(INSTANCES)]
    for instance_id in instance_ids:
        simulator.add_instance(instance_id, TOKEN, phone="5511900000018")
    waves = [[command_of(instance_id, n) for instance_id in instance_ids] for n in range(SENDS)]
    outcomes = Outcomes({command.command_id for wave in waves for command in wave})
    bodies = {
        name: [
            samples.received_text(f"{prefix}-{name}-{n:04d}") for n in range(WEBHOOKS_PER_REPLICA)
        ]
        for name in INGESTS
    }
    system = await asyncio.to_thread(
        start_system, nats_cluster, database_url, wapi_simulator_server.base_url, tmp_path / "logs"
    )
    try:
        async with await nats.connect(servers=system.cluster.urls, connect_timeout=5) as probe:
            node = await node_leading(probe, system, subjects.STREAM_SEND)
        # The test's client stays on the nodes that live; the services learn them by themselves.
        others = [url for i, url in enumerate(system.cluster.urls) if i != node]
        async with await nats.connect(
            servers=others, connect_timeout=5, max_reconnect_attempts=-1
        ) as nc:
            await nc.subscribe(subjects.SEND_OUTCOMES_ALL, cb=outcomes.on_outcome)
            await register_all(nc, instance_ids)
            accepted = await traffic_across_a_lost_node(
                nc, system, simulator, node=node, waves=waves, bodies=bodies
            )
            await simulator.wait_for_calls(operation="send-text", count=800, timeout=90)
            await lose_two_senders(nc, system)
            await outcomes.wait(timeout=90)
            await webhooks_archived(database_url, len(accepted))
            streamed = await read_stream(nc, subjects.STREAM_WEBHOOKS, subjects.WEBHOOKS_ALL)
            answers = await read_stream(nc, subjects.STREAM_SEND, subjects.SEND_OUTCOMES_ALL)
    finally:
        await asyncio.to_thread(system.stack.stop)

    decided = answered_once(answers, outcomes.expected)
    calls = [c for c in simulator.calls(operation="send-text") if c.instance_id in instance_ids]
    called_once_in_order_and_paced(calls, decided)
    rows = await query(database_url, "SELECT raw->>'messageId' AS id FROM webhook_payloads")
    archived = [str(row.id) for row in rows]
    streamed_ids = [str(json.loads(m.data)["raw"]["messageId"]) for m in streamed]
    assert len(accepted) == len(INGESTS) * WEBHOOKS_PER_REPLICA  # spooled while NATS could not
    assert repeated(streamed_ids) == {}
    assert repeated(archived) == {}
    assert set(streamed_ids) == accepted, sorted(accepted ^ set(streamed_ids))[:5]
    assert set(archived) == accepted, sorted(accepted ^ set(archived))[:5]
    print(  # noqa: T201 - the run's figures, for the report
        f"load average {os.getloadavg()}, decisions {Counter(decided.values())}, calls {len(calls)}"
    )


def answered_once(answers: list[Msg], expected: set[str]) -> dict[str, SendStatus]:
    """Every command answered once on the bus: one decision each (sent or uncertain). Its first
    publish may be lost with the node (then the next delivery's replay of the stored row carries
    it), and a redelivered command is answered again by a replay: all agree with the decision."""
    stored = [SendOutcome.model_validate_json(message.data) for message in answers]
    finals = [outcome for outcome in stored if outcome.status.is_final_decision]
    assert repeated([o.command_id for o in finals if not o.replayed]) == {}
    assert {o.command_id for o in finals} == expected, len(
        expected ^ {o.command_id for o in finals}
    )
    decided = {o.command_id: o.status for o in finals}
    assert [o for o in finals if o.status is not decided[o.command_id]] == []
    assert set(decided.values()) <= {SendStatus.SENT, SendStatus.UNCERTAIN}, Counter(
        decided.values()
    )
    return decided


def called_once_in_order_and_paced(calls: list[CallRecord], decided: dict[str, SendStatus]) -> None:
    """At most one provider call per command, one for each `sent`; each instance's calls in
    command order and at least the minimum gap apart, as the provider received them."""
    called = Counter(_command_id(call) for call in calls)
    assert repeated(list(called.elements())) == {}, called.most_common(3)
    sent = {command_id for command_id, status in decided.items() if status is SendStatus.SENT}
    assert sent <= set(called), sorted(sent - set(called))[:5]
    # Uncertain: what a lost replica had in flight, at most one per instance per lost replica.
    uncertain = Counter(
        command_id.rsplit("-", 1)[0]
        for command_id, status in decided.items()
        if status is SendStatus.UNCERTAIN
    )
    assert max(uncertain.values(), default=0) <= 2, uncertain
    by_instance: dict[str, list[CallRecord]] = defaultdict(list)
    for call in sorted(calls, key=lambda call: call.at):
        by_instance[str(call.instance_id)].append(call)
    for instance_id, mine in by_instance.items():
        order = [_command_id(call) for call in mine]
        assert order == sorted(order), (instance_id, order)
        gap = min((b.at - a.at for a, b in itertools.pairwise(mine)), default=MIN_GAP_S)
        assert gap >= MIN_GAP_S, (instance_id, gap)


def _command_id(call: CallRecord) -> str:
    """The command a call carried (its text is `<command id> <n>`, see `command_of`)."""
    assert isinstance(call.body, dict)
    return str(call.body["message"]).split(" ", 1)[0]
