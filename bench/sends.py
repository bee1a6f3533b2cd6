"""Driving the real sender: seed instances, publish commands, time their outcomes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats
import sqlalchemy as sa

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import SendMessage, TextContent
from zapgate.health.adapters.db import instances
from zapgate.runtime.db import create_engine

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

DESTINATION = "5521987654321"


@dataclass(frozen=True)
class BenchInstance:
    instance_id: str
    token: str
    phone: str


def bench_instances(count: int) -> list[BenchInstance]:
    return [BenchInstance(f"SEND{n:03d}", f"tok{n:03d}", f"5511988{n:06d}") for n in range(count)]


async def seed_instances(database_url: str, items: list[BenchInstance]) -> None:
    """Rows in health's `instances` as connected with a phone: written directly (a benchmark
    seeds its fixture; the running health service is the table's only writer otherwise)."""
    now = datetime.now(UTC)
    rows = [
        {
            "instance_id": item.instance_id,
            "display_name": f"bench {item.instance_id}",
            "token": item.token,
            "managed": True,
            "paused": False,
            "state": InstanceState.CONNECTED.value,
            "phone": item.phone,
            "phone_observed_at": now,
            "since": now,
            "state_observed_at": now,
            "last_check_at": now,
            "outage_notified": False,
            "created_at": now,
            "updated_at": now,
        }
        for item in items
    ]
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(instances), rows)
    finally:
        await engine.dispose()


@dataclass
class SendRun:
    """Outcomes of one run: latency from publish to outcome seen, in milliseconds."""

    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    published: int = 0


class SendDriver:
    """Publishes `SendMessage` commands to `ZG_SEND` and awaits each one's outcome."""

    def __init__(self, nc: Client, items: list[BenchInstance]) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)
        self._items = items
        self._waiting: dict[str, tuple[float, asyncio.Future[str]]] = {}
        self.tag = "bench"
        # (instance, stream sequence, text) of every command published: the order to check.
        self.published: list[tuple[str, int, str]] = []

    async def start(self) -> None:
        await self._nc.subscribe(subjects.SEND_OUTCOMES_ALL, cb=self._on_outcome)

    async def _on_outcome(self, msg: Msg) -> None:
        outcome = json.loads(msg.data)
        waiting = self._waiting.get(outcome["command_id"])
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(outcome["status"])

    async def send_one(self, index: int, run: SendRun, timeout: float = 60.0) -> None:
        item = self._items[index % len(self._items)]
        text = f"{self.tag} {index}"
        command = SendMessage(
            command_id=f"bench-{uuid.uuid4().hex}",
            instance_id=item.instance_id,
            phone=DESTINATION,
            body=TextContent(message=text),
        )
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self._waiting[command.command_id] = (started, future)
        try:
            ack = await self._js.publish(
                subjects.send_command_subject(item.instance_id),
                command.model_dump_json().encode(),
                stream=subjects.STREAM_SEND,
                headers={subjects.MSG_ID_HEADER: command.command_id},
            )
            self.published.append((item.instance_id, ack.seq, text))
            run.published += 1
            status = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            status = "no_outcome"
        finally:
            del self._waiting[command.command_id]
        run.latencies_ms.append((time.perf_counter() - started) * 1000)
        run.statuses[status] += 1

    async def closed_loop(self, count: int, in_flight: int) -> SendRun:
        """`count` commands with at most `in_flight` awaiting their outcome at once."""
        run = SendRun()
        next_index = iter(range(count))

        async def worker() -> None:
            for index in next_index:
                await self.send_one(index, run)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        run.elapsed = time.perf_counter() - started
        return run


def order_violations(published: list[tuple[str, int, str]], received: list[tuple[str, str]]) -> int:
    """Instances whose texts reached the provider (`received`: instance, text, in arrival
    order) in another order than their commands' stream sequence (`published`). A command
    whose call never reached the provider (an `uncertain` timeout) is left out of its
    instance's expected order, not counted as disorder; a text received twice is disorder."""
    sequence = {text: (instance_id, seq) for instance_id, seq, text in published}
    seen: dict[str, list[int]] = {}
    for instance_id, text in received:
        if text in sequence:
            seen.setdefault(instance_id, []).append(sequence[text][1])
    return sum(1 for seqs in seen.values() if seqs != sorted(set(seqs)))


async def connect(nats_url: str) -> Client:
    return await nats.connect(nats_url, connect_timeout=5)
