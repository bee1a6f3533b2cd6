"""Faults with counts: what went in, what came out (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest

from tests.e2e.conftest import (
    check_now,
    make_stack,
    read_stream,
    register,
    repeated,
    unique,
    wait_until,
)
from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    NotificationKind,
)
from zapgate.contracts.sending import SendMessage, SendOutcome, SendStatus, TextContent
from zapgate.runtime.db import migrate_all
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import query
from zapgate.wapi.simulator.models import CallRecord, FaultKind, RestartMode

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from tests.e2e.conftest import Stack
    from zapgate.devservers.nats import NatsServer
    from zapgate.devservers.postgres import EmbeddedPostgres
    from zapgate.wapi.simulator.handle import Simulator
    from zapgate.wapi.simulator.server import SimulatorServer

pytestmark = [pytest.mark.real, pytest.mark.slow]

TOKEN = "e2e-fault-token"
CUSTOMER = "5511977776666"
BATCH = 20


def text_commands(instance_id: str, label: str, count: int) -> list[SendMessage]:
    """`count` text commands for one instance, ids and texts numbered under `label`."""
    return [
        SendMessage(
            command_id=f"{instance_id}-{label}-{n}",
            instance_id=instance_id,
            phone=CUSTOMER,
            body=TextContent(message=f"{label} {n}"),
        )
        for n in range(count)
    ]


class FinalOutcomes:
    """The first final decision published for each of `commands` (SEND_OUTCOMES_ALL)."""

    def __init__(self, commands: list[SendMessage]) -> None:
        self.expected = {command.command_id for command in commands}
        self.decided: dict[str, SendOutcome] = {}
        self._all = asyncio.Event()

    async def listen(self, client: Client) -> None:
        await client.subscribe(subjects.SEND_OUTCOMES_ALL, cb=self._on_outcome)

    async def _on_outcome(self, message: Msg) -> None:
        outcome = SendOutcome.model_validate_json(message.data)
        if outcome.status.is_final_decision and outcome.command_id in self.expected:
            self.decided.setdefault(outcome.command_id, outcome)
            if len(self.decided) == len(self.expected):
                self._all.set()

    async def wait(self, client: Client, timeout: float) -> dict[str, SendOutcome]:
        """Every decision, or what is known at the timeout (asking for the stored ones)."""
        try:
            await asyncio.wait_for(self._all.wait(), timeout=timeout)
        except TimeoutError:
            # Outcomes published while nobody listened are still stored: ask for them.
            sender = SenderClient(client)
            for command_id in self.expected - set(self.decided):
                stored = await sender.outcome(command_id)
                if stored is not None and stored.status.is_final_decision:
                    self.decided[command_id] = stored
        return self.decided

    def missing(self) -> list[str]:
        return sorted(self.expected - set(self.decided))


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(
        "health",
        "sender",
        sender={
            "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
            # A crash leaves one command `sending`: reconciled after the lease, redelivered
            # after the ack wait; both short so the test sees the end of it.
            "ZAPGATE_SENDER_SENDING_LEASE": "PT3S",
            "ZAPGATE_SENDER_COMMAND_ACK_WAIT": "PT3S",
            "ZAPGATE_SENDER_SWEEP_EVERY": "PT1S",
        },
        health={"ZAPGATE_HEALTH_TICK_INTERVAL": "PT1H"},
    )


async def test_a_sender_killed_mid_batch_sends_nothing_twice_and_answers_every_command(
    stack: Stack, client: Client, wapi_simulator: Simulator
) -> None:
    """SIGKILL while 20 sends drain: each text reaches W-API at most once; all get an outcome."""
    instance_id = unique("crash")
    wapi_simulator.add_instance(instance_id, TOKEN, phone="5511900000009", latency_s=0.15)
    await register(client, instance_id, TOKEN)
    await client.request(
        subjects.API_HEALTH_CHECK_NOW,
        f'{{"instance_id": "{instance_id}"}}'.encode(),
        timeout=20,
    )
    commands = text_commands(instance_id, "mensagem", BATCH)

    collector = FinalOutcomes(commands)
    await collector.listen(client)
    await publish_sends(client, commands)
    await wapi_simulator.wait_for_calls(
        operation="send-text", instance_id=instance_id, count=5, timeout=30
    )
    stack.processes["sender"].kill()
    await asyncio.to_thread(stack.processes["sender"].start)

    outcomes = await collector.wait(client, timeout=60)

    calls = wapi_simulator.calls(operation="send-text", instance_id=instance_id)
    texts = Counter(str(call.body["message"]) for call in calls if isinstance(call.body, dict))
    assert all(count == 1 for count in texts.values()), texts.most_common(3)
    assert len(outcomes) == BATCH, collector.missing()
    statuses = Counter(outcome.status for outcome in outcomes.values())
    # Sent means W-API took it; at most the one in flight at the kill is honestly uncertain.
    assert statuses[SendStatus.UNCERTAIN] <= 1, statuses
    assert statuses[SendStatus.SENT] + statuses[SendStatus.UNCERTAIN] == BATCH, statuses
    assert statuses[SendStatus.SENT] <= len(texts) <= BATCH


# --- NATS stopped and restarted during a burst of webhooks ----------------------------------

BURST = 30


def webhook_bodies(prefix: str, count: int) -> list[dict[str, Any]]:
    return [samples.received_text(f"{prefix}{n:04d}") for n in range(count)]


async def post_burst(url: str, bodies: list[dict[str, Any]]) -> dict[str, str]:
    """POST every body at once; the message ids answered 2xx, with ingest's disposition."""
    async with httpx.AsyncClient(timeout=20) as http:
        responses = await asyncio.gather(*(http.post(url, json=body) for body in bodies))
    return {
        str(body["messageId"]): str(response.json()["disposition"])
        for body, response in zip(bodies, responses, strict=True)
        if response.is_success
    }


async def stored_message_ids(database_url: str) -> list[str]:
    rows = await query(database_url, "SELECT raw->>'messageId' AS id FROM webhook_payloads")
    return [str(row.id) for row in rows]


async def test_nats_stopped_and_restarted_mid_burst_keeps_every_accepted_webhook_once(
    fault_nats_server: Callable[..., NatsServer],
    database_url: str,
    wapi_simulator_server: SimulatorServer,
    tmp_path: Path,
) -> None:
    """90 webhooks while NATS stops and restarts: each 2xx one is streamed once and stored once."""
    server = fault_nats_server()
    stack = make_stack(server.url, database_url, wapi_simulator_server.base_url, tmp_path / "logs")
    try:
        await asyncio.to_thread(stack.start, "ingest")
        before, during, after = (webhook_bodies(p, BURST) for p in ("NSTOP", "NDOWN", "NBACK"))
        # The stop and the restart each land in the middle of a burst.
        accepted, _ = await asyncio.gather(
            post_burst(stack.webhook_url, before), asyncio.to_thread(server.stop)
        )
        while_down = await post_burst(stack.webhook_url, during)
        accepted |= while_down
        back, _ = await asyncio.gather(
            post_burst(stack.webhook_url, after), asyncio.to_thread(server.start)
        )
        accepted |= back
        # Ingest keeps answering while NATS is away: what it cannot publish it spools.
        assert set(while_down.values()) == {"spooled"}, Counter(while_down.values())
        assert len(while_down) == BURST

        nc = await nats.connect(server.url, connect_timeout=5)
        try:

            async def all_streamed() -> bool:
                info = await nc.jetstream().stream_info(subjects.STREAM_WEBHOOKS)
                return int(info.state.messages) >= len(accepted)

            async def all_stored() -> bool:
                return len(await stored_message_ids(database_url)) >= len(accepted)

            await wait_until(all_streamed, timeout=60, what="every accepted webhook streamed")
            await wait_until(all_stored, timeout=60, what="every accepted webhook stored")
            messages = await read_stream(nc, subjects.STREAM_WEBHOOKS, subjects.WEBHOOKS_ALL)
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(stack.stop)

    streamed = [str(json.loads(message.data)["raw"]["messageId"]) for message in messages]
    stored = await stored_message_ids(database_url)
    assert repeated(streamed) == {}
    assert repeated(stored) == {}
    assert set(streamed) == set(accepted), sorted(set(accepted) ^ set(streamed))[:5]
    assert set(stored) == set(accepted), sorted(set(accepted) ^ set(stored))[:5]


# --- the provider answering 5xx and gateway timeouts for a while ----------------------------

FLAKY_PHONE = "5511900000031"


@pytest.fixture
def provider_stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(
        "health",
        "sender",
        health={
            "ZAPGATE_HEALTH_TICK_INTERVAL": "PT1S",
            "ZAPGATE_HEALTH_RESTART_COOLDOWN": "PT120S",
            "ZAPGATE_HEALTH_SETTLE_WINDOW": "PT1S",
            "ZAPGATE_HEALTH_CONFIRM_DELAY": "PT0.5S",
        },
        sender={
            "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
            "ZAPGATE_SENDER_PROVIDER_BACKOFF": "PT0.05S",
            "ZAPGATE_SENDER_PROVIDER_BACKOFF_CAP": "PT0.2S",
        },
    )


async def next_change(
    subscription: Subscription, to_state: InstanceState, timeout: float
) -> InstanceStateChanged:
    """The next state change of the subscription's instance into `to_state`."""
    async with asyncio.timeout(timeout):
        while True:
            message = await subscription.next_msg(timeout=None)
            change = InstanceStateChanged.model_validate_json(message.data)
            if change.to_state is to_state:
                return change


def texts(commands: list[SendMessage]) -> list[str]:
    return [command.body.message for command in commands if isinstance(command.body, TextContent)]


def send_text_counts(wapi_simulator: Simulator, instance_id: str) -> Counter[str]:
    calls = wapi_simulator.calls(operation="send-text", instance_id=instance_id)
    return Counter(str(call.body["message"]) for call in calls if isinstance(call.body, dict))


async def test_provider_5xx_and_timeouts_fail_or_stay_uncertain_and_health_degrades_then_recovers(
    provider_stack: Stack, client: Client, wapi_simulator: Simulator
) -> None:
    """5xx sends fail after bounded retries, 504s are uncertain after one call; one outage."""
    del provider_stack
    instance_id = unique("flaky")
    wapi_simulator.add_instance(instance_id, TOKEN, phone=FLAKY_PHONE)
    await register(client, instance_id, TOKEN)
    assert (await check_now(client, instance_id)).checked[0].state is InstanceState.CONNECTED
    changes = await client.subscribe(subjects.state_changed_subject(instance_id))
    sender = SenderClient(client)

    # 503 on every send: the provider certainly did not take it, so the sender retries, bounded.
    unavailable = text_commands(instance_id, "indisponivel", 3)
    wapi_simulator.fail(instance_id, FaultKind.SERVICE_UNAVAILABLE, operations={"send-text"})
    failed = await asyncio.gather(*(sender.send(c, timeout=30) for c in unavailable))
    # 504 three times: the provider may have acted, so each command is uncertain after one call.
    timed_out = text_commands(instance_id, "sem-resposta", 3)
    wapi_simulator.fail(instance_id, FaultKind.GATEWAY_TIMEOUT, operations={"send-text"}, times=3)
    uncertain = [await sender.send(c, timeout=30) for c in timed_out]

    # Every operation failing: a tick degrades the instance; cleared, a tick brings it back.
    wapi_simulator.fail(instance_id, FaultKind.BAD_GATEWAY)
    degraded = await next_change(changes, InstanceState.DEGRADED, timeout=20)
    wapi_simulator.set_fault(instance_id, None)
    connected = await next_change(changes, InstanceState.CONNECTED, timeout=20)
    status_calls = len(wapi_simulator.calls(operation="status-instance", instance_id=instance_id))
    # Two more ticks after the recovery, so a repeated notification would have shown up.
    await wapi_simulator.wait_for_calls(
        operation="status-instance", instance_id=instance_id, count=status_calls + 2, timeout=20
    )
    recovered = await sender.send(text_commands(instance_id, "de-volta", 1)[0], timeout=30)
    await changes.unsubscribe()

    calls = send_text_counts(wapi_simulator, instance_id)
    for outcome in failed:
        assert outcome.status is SendStatus.FAILED, outcome
        assert outcome.error is not None
        assert outcome.error.code == ErrorCode.PROVIDER_UNAVAILABLE, outcome.error
    assert [calls[text] for text in texts(unavailable)] == [o.attempts for o in failed]
    assert all(1 < outcome.attempts <= 3 for outcome in failed), [o.attempts for o in failed]
    assert [outcome.status for outcome in uncertain] == [SendStatus.UNCERTAIN] * 3, uncertain
    assert [calls[text] for text in texts(timed_out)] == [1, 1, 1]
    assert recovered.status is SendStatus.SENT, recovered
    assert (degraded.reason, connected.from_state) == (
        ErrorCode.TIMEOUT_OR_GATEWAY,
        InstanceState.DEGRADED,
    )
    notifications = [
        InstanceNotification.model_validate_json(message.data)
        for message in await read_stream(
            client, subjects.STREAM_HEALTH, subjects.notification_subject(instance_id)
        )
    ]
    assert [n.kind for n in notifications] == [
        NotificationKind.OUTAGE,
        NotificationKind.RECOVERED,
    ], notifications
    assert notifications[0].reason == ErrorCode.TIMEOUT_OR_GATEWAY, notifications[0]


# --- three health replicas, one killed in the middle of a tick ------------------------------

FLEET = 200
REPLICA_CONCURRENCY = 16


@pytest.fixture
def replica_stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(
        "health1",
        "health2",
        "health3",
        health={
            # Longer than one tick over the fleet, so ticks do not overlap; the cooldown spans
            # every tick of the test.
            "ZAPGATE_HEALTH_TICK_INTERVAL": "PT5S",
            "ZAPGATE_HEALTH_RESTART_COOLDOWN": "PT300S",
            "ZAPGATE_HEALTH_PROVIDER_CONCURRENCY": str(REPLICA_CONCURRENCY),
        },
    )


def ticking_replica(stack: Stack) -> str | None:
    """The replica whose log shows work done inside a tick (lines bound to a tick sequence)."""
    for name in ("health1", "health2", "health3"):
        log = stack.logs / f"{name}.log"
        if log.exists() and '"tick_sequence"' in log.read_text(errors="replace"):
            return name
    return None


async def fleet_calls(
    wapi_simulator: Simulator, operation: str, fleet: set[str], at_least: int
) -> list[CallRecord]:
    """The fleet's calls of `operation`, once there are `at_least` (woken by each new call)."""
    while True:
        every = wapi_simulator.calls(operation=operation)
        mine = [call for call in every if call.instance_id in fleet]
        if len(mine) >= at_least:
            return mine
        await wapi_simulator.wait_for_calls(operation=operation, count=len(every) + 1, timeout=30)


async def test_a_health_replica_killed_mid_tick_leaves_no_instance_unchecked_or_restarted_twice(
    replica_stack: Stack, client: Client, wapi_simulator: Simulator
) -> None:
    """SIGKILL the replica running a 200-instance tick: all get checked, none restarted twice."""
    prefix = unique("fleet")
    ids = [f"{prefix}-{n:03d}" for n in range(FLEET)]
    fleet = set(ids)
    down = set(ids[::2])  # half stay disconnected: each check of them wants a restart
    for instance_id in ids:
        wapi_simulator.add_instance(
            instance_id,
            TOKEN,
            phone=None if instance_id in down else "5511900000077",
            connected=instance_id not in down,
            restart_mode=RestartMode.NEVER,
            latency_s=0.1,
        )
    await asyncio.gather(*(register(client, instance_id, TOKEN) for instance_id in ids))

    # A tick over the fleet is under way once the provider has seen a tenth of its checks.
    await fleet_calls(wapi_simulator, "status-instance", fleet, FLEET // 10)
    victim: str | None = None

    async def one_replica_ticking() -> bool:
        nonlocal victim
        victim = ticking_replica(replica_stack)
        return victim is not None

    await wait_until(one_replica_ticking, timeout=20, what="a replica logs work of a tick")
    assert victim is not None
    replica_stack.processes[victim].kill()
    killed_at = datetime.now(UTC)
    checked_before_kill = {
        call.instance_id for call in wapi_simulator.calls(operation="status-instance")
    } & fleet
    assert len(checked_before_kill) < FLEET, "the tick ended before the kill: nothing was tested"

    async def fleet_checked_after_kill() -> bool:
        rows = await query(
            replica_stack.database_url,
            "SELECT count(*) AS n FROM instances WHERE instance_id = ANY(:ids) "
            "AND last_check_at > :at AND state <> 'unknown'",
            ids=ids,
            at=killed_at,
        )
        return int(rows[0].n) == FLEET

    async def every_down_one_claimed_a_restart() -> bool:
        rows = await query(
            replica_stack.database_url,
            "SELECT count(*) AS n FROM instances WHERE instance_id = ANY(:ids) "
            "AND last_restart_attempt_at IS NOT NULL",
            ids=ids,
        )
        return int(rows[0].n) == len(down)

    await wait_until(fleet_checked_after_kill, timeout=60, what="every instance checked again")
    await wait_until(every_down_one_claimed_a_restart, timeout=60, what="a restart claim for each")
    # Restarts follow their claims; only the victim's claims in flight at the kill (at most its
    # provider concurrency) have no call: those instances wait for the cooldown.
    await fleet_calls(wapi_simulator, "restart", fleet, len(down) - REPLICA_CONCURRENCY)
    # A whole further round of checks: a second restart inside the cooldown would show now.
    seen = len(await fleet_calls(wapi_simulator, "status-instance", fleet, 0))
    await fleet_calls(wapi_simulator, "status-instance", fleet, seen + FLEET)

    restarts = Counter(
        str(call.instance_id) for call in await fleet_calls(wapi_simulator, "restart", fleet, 0)
    )
    assert repeated(list(restarts.elements())) == {}, restarts.most_common(3)
    assert set(restarts) <= down, sorted(set(restarts) - down)[:3]
    assert len(restarts) >= len(down) - REPLICA_CONCURRENCY, (len(restarts), len(down))
    states = await query(
        replica_stack.database_url,
        "SELECT state, count(*) AS n FROM instances WHERE instance_id = ANY(:ids) GROUP BY state",
        ids=ids,
    )
    assert {row.state: int(row.n) for row in states} == {
        "connected": FLEET - len(down),
        "disconnected": len(down),
    }


# --- the database restarted under load ------------------------------------------------------

LOAD_SENDS = 10


async def publish_sends(client: Client, commands: list[SendMessage]) -> None:
    js = client.jetstream()
    for command in commands:
        await js.publish(
            subjects.send_command_subject(command.instance_id),
            command.model_dump_json().encode(),
            stream=subjects.STREAM_SEND,
            headers={subjects.MSG_ID_HEADER: command.command_id},
        )


async def test_the_database_restarted_under_load_loses_nothing_and_sends_nothing_twice(
    isolated_postgres: Callable[..., EmbeddedPostgres],
    nats_url: str,
    wapi_simulator_server: SimulatorServer,
    client: Client,
    tmp_path: Path,
) -> None:
    """PostgreSQL SIGKILLed mid-load, down a while, back: 90 webhooks stored once, 30 sends once."""
    postgres = await asyncio.to_thread(isolated_postgres)
    await asyncio.to_thread(postgres.create_database, "zg_db_fault")
    database_url = postgres.url("zg_db_fault")
    await asyncio.to_thread(migrate_all, database_url)
    wapi_simulator = wapi_simulator_server.simulator
    stack = make_stack(
        nats_url,
        database_url,
        wapi_simulator_server.base_url,
        tmp_path / "logs",
        sender={
            "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
            "ZAPGATE_SENDER_SENDING_LEASE": "PT3S",
            "ZAPGATE_SENDER_COMMAND_ACK_WAIT": "PT5S",
        },
        health={"ZAPGATE_HEALTH_TICK_INTERVAL": "PT1H"},
    )
    instance_id = unique("dbload")
    wapi_simulator.add_instance(instance_id, TOKEN, phone="5511900000044", latency_s=0.05)
    batches = [text_commands(instance_id, phase, LOAD_SENDS) for phase in ("up", "down", "back")]
    commands = [command for batch in batches for command in batch]

    collector = FinalOutcomes(commands)
    await collector.listen(client)
    try:
        await asyncio.to_thread(stack.start, "ingest", "health", "sender")
        await register(client, instance_id, TOKEN)
        assert (await check_now(client, instance_id)).checked[0].state is InstanceState.CONNECTED
        before, during, after = (webhook_bodies(p, BURST) for p in ("DBUP", "DBDOWN", "DBBACK"))
        # The kill lands in the middle of the first burst and batch, the restart in the last.
        accepted, _, _ = await asyncio.gather(
            post_burst(stack.webhook_url, before),
            publish_sends(client, batches[0]),
            asyncio.to_thread(postgres.kill),
        )
        while_down, _ = await asyncio.gather(
            post_burst(stack.webhook_url, during), publish_sends(client, batches[1])
        )
        accepted |= while_down
        back, _, _ = await asyncio.gather(
            post_burst(stack.webhook_url, after),
            publish_sends(client, batches[2]),
            asyncio.to_thread(postgres.start),
        )
        accepted |= back
        # Webhooks do not wait for the database: every one is answered while it is away.
        assert len(accepted) == 3 * BURST, 3 * BURST - len(accepted)

        outcomes = await collector.wait(client, timeout=90)

        async def all_stored() -> bool:
            return len(await stored_message_ids(database_url)) >= len(accepted)

        await wait_until(all_stored, timeout=60, what="every accepted webhook stored")
        stored = await stored_message_ids(database_url)
    finally:
        await asyncio.to_thread(stack.stop)

    assert repeated(stored) == {}
    assert set(stored) == set(accepted), sorted(set(accepted) ^ set(stored))[:5]
    sent_texts = send_text_counts(wapi_simulator, instance_id)
    assert repeated(list(sent_texts.elements())) == {}, sent_texts.most_common(3)
    assert len(outcomes) == len(commands), collector.missing()
    statuses = Counter(outcome.status for outcome in outcomes.values())
    # Sent once W-API took it; uncertain only where the database died between call and record.
    assert statuses[SendStatus.SENT] + statuses[SendStatus.UNCERTAIN] == len(commands), statuses
    assert statuses[SendStatus.SENT] <= len(sent_texts) <= len(commands)
