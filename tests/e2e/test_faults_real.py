"""Faults with counts: what went in, what came out (nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import make_stack, register, unique
from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.sending import SendMessage, SendOutcome, SendStatus, TextContent

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from tests.e2e.conftest import Stack
    from zapgate.wapi.simulator.handle import Simulator
    from zapgate.wapi.simulator.server import SimulatorServer

pytestmark = [pytest.mark.real, pytest.mark.slow]

TOKEN = "e2e-fault-token"
BATCH = 20


@pytest.fixture
def stack(
    nats_url: str, database_url: str, wapi_simulator_server: SimulatorServer, tmp_path: Path
) -> Iterator[Stack]:
    stack = make_stack(
        nats_url,
        database_url,
        wapi_simulator_server.base_url,
        tmp_path / "logs",
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
    try:
        stack.start("health", "sender")
        yield stack
    finally:
        stack.stop()


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
    outcomes: dict[str, SendOutcome] = {}
    all_decided = asyncio.Event()
    commands = [
        SendMessage(
            command_id=f"{instance_id}-{n}",
            instance_id=instance_id,
            phone="5511988887777",
            body=TextContent(message=f"mensagem {n}"),
        )
        for n in range(BATCH)
    ]

    async def on_outcome(message: Msg) -> None:
        outcome = SendOutcome.model_validate_json(message.data)
        if outcome.status.is_final_decision and outcome.command_id not in outcomes:
            outcomes[outcome.command_id] = outcome
            if len(outcomes) == BATCH:
                all_decided.set()

    await client.subscribe(subjects.SEND_OUTCOMES_ALL, cb=on_outcome)
    js = client.jetstream()
    for command in commands:
        await js.publish(
            subjects.send_command_subject(instance_id),
            command.model_dump_json().encode(),
            stream=subjects.STREAM_SEND,
            headers={subjects.MSG_ID_HEADER: command.command_id},
        )
    await wapi_simulator.wait_for_calls(
        operation="send-text", instance_id=instance_id, count=5, timeout=30
    )
    stack.processes["sender"].kill()
    await asyncio.to_thread(stack.processes["sender"].start)

    try:
        await asyncio.wait_for(all_decided.wait(), timeout=60)
    except TimeoutError:
        # Outcomes published while nobody listened are still stored: ask for them.
        sender = SenderClient(client)
        for command in commands:
            if command.command_id not in outcomes:
                stored = await sender.outcome(command.command_id)
                if stored is not None and stored.status.is_final_decision:
                    outcomes[command.command_id] = stored

    calls = wapi_simulator.calls(operation="send-text", instance_id=instance_id)
    texts = Counter(str(call.body["message"]) for call in calls if isinstance(call.body, dict))
    assert all(count == 1 for count in texts.values()), texts.most_common(3)
    assert len(outcomes) == BATCH, sorted({c.command_id for c in commands} - set(outcomes))
    statuses = Counter(outcome.status for outcome in outcomes.values())
    # Sent means W-API took it; at most the one in flight at the kill is honestly uncertain.
    assert statuses[SendStatus.UNCERTAIN] <= 1, statuses
    assert statuses[SendStatus.SENT] + statuses[SendStatus.UNCERTAIN] == BATCH, statuses
    assert statuses[SendStatus.SENT] <= len(texts) <= BATCH
