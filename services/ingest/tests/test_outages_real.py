"""A webhook answered 2xx is never lost: NATS down, database down, process killed.

Each test counts payloads sent against messages in the stream and rows stored: equal, none
twice. Dedicated servers (fault fixtures) are stopped and restarted for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from zapgate.contracts import subjects
from zapgate.runtime.db import create_engine, migrate_all
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import (
    SECRET,
    make_settings,
    query,
    start_ingest,
    stream_count,
    stream_messages,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from nats.aio.msg import Msg

    from zapgate.devservers.nats import NatsServer
    from zapgate.devservers.postgres import EmbeddedPostgres

pytestmark = [pytest.mark.real, pytest.mark.slow]

URL = f"/webhooks/{SECRET}"


def webhooks(count: int, prefix: str) -> list[dict[str, Any]]:
    return [samples.received_text(f"{prefix}{number:04d}") for number in range(count)]


async def post_all(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[str]:
    responses = await asyncio.gather(*(client.post(URL, json=body) for body in bodies))
    assert [response.status_code for response in responses] == [200] * len(bodies)
    return [response.json()["disposition"] for response in responses]


class Collector:
    """Counts messages a core subscription sees, and wakes waiters at a target."""

    def __init__(self) -> None:
        self.seen: list[Msg] = []
        self._changed = asyncio.Condition()

    async def on_message(self, message: Msg) -> None:
        async with self._changed:
            self.seen.append(message)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.seen) >= count)


def assert_each_once(messages: list[Msg], expected_ids: set[str]) -> None:
    message_ids = [json.loads(message.data)["raw"]["messageId"] for message in messages]
    assert sorted(message_ids) == sorted(expected_ids)


async def test_nats_stopped_mid_stream_spools_then_drains_nothing_lost_none_twice(
    fault_nats_server: Callable[..., NatsServer], database_url: str, tmp_path: Path
) -> None:
    """Half the webhooks go to JetStream, half to the spool while NATS is down; all arrive once."""
    server = fault_nats_server()
    ingest = await start_ingest(make_settings(server.url, database_url, tmp_path / "spool"))
    before, during = webhooks(20, "BEFORE"), webhooks(20, "DURING")
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
            assert set(await post_all(client, before)) == {"published"}
            await asyncio.to_thread(server.stop)
            assert set(await post_all(client, during)) == {"spooled"}
            assert ingest.runtime.spool.pending == 20
            await asyncio.to_thread(server.start)
            await ingest.runtime.wait_spool_empty(timeout=30)
            assert ingest.runtime.archiver is not None
            await ingest.runtime.archiver.wait_archived(40, timeout=30)
    finally:
        await ingest.stop()
    nc = await nats.connect(server.url)
    try:
        messages = await stream_messages(nc)
    finally:
        await nc.close()
    assert_each_once(messages, {body["messageId"] for body in before + during})
    rows = await query(
        database_url,
        "SELECT count(DISTINCT dedupe_key) AS n, count(*) AS total FROM webhook_payloads",
    )
    assert (rows[0].n, rows[0].total) == (40, 40)


async def test_nats_down_at_start_still_accepts_and_drains_later(
    fault_nats_server: Callable[..., NatsServer], database_url: str, tmp_path: Path
) -> None:
    """Ingest starts with NATS unreachable, spools, and publishes everything once NATS is up."""
    server = fault_nats_server()
    await asyncio.to_thread(server.stop)
    ingest = await start_ingest(
        make_settings(server.url, database_url, tmp_path / "spool"), connected=False
    )
    bodies = webhooks(5, "EARLY")
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
            assert set(await post_all(client, bodies)) == {"spooled"}
        await asyncio.to_thread(server.start)
        await ingest.runtime.wait_spool_empty(timeout=30)
    finally:
        await ingest.stop()
    nc = await nats.connect(server.url)
    try:
        assert_each_once(await stream_messages(nc), {body["messageId"] for body in bodies})
    finally:
        await nc.close()


async def test_database_down_keeps_webhooks_in_jetstream_until_it_returns(
    isolated_postgres: Callable[..., EmbeddedPostgres], nats_url: str, tmp_path: Path
) -> None:
    """Answers stay 200 while PostgreSQL is down; the archive catches up after it is back."""
    postgres = await asyncio.to_thread(isolated_postgres)
    await asyncio.to_thread(postgres.create_database, "zg_outage")
    database_url = postgres.url("zg_outage")
    await asyncio.to_thread(migrate_all, database_url)
    ingest = await start_ingest(make_settings(nats_url, database_url, tmp_path / "spool"))
    first, while_down = webhooks(10, "DBUP"), webhooks(15, "DBDOWN")
    archiver = ingest.runtime.archiver
    assert archiver is not None
    try:
        async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
            await post_all(client, first)
            await archiver.wait_archived(10, timeout=20)
            await asyncio.to_thread(postgres.kill)
            assert set(await post_all(client, while_down)) == {"published"}
            nc = await nats.connect(nats_url)
            try:
                assert await stream_count(nc) == 25
            finally:
                await nc.close()
            assert archiver.archived == 10
            await asyncio.to_thread(postgres.start)
            await archiver.wait_archived(25, timeout=60)
    finally:
        await ingest.stop()
    rows = await query(database_url, "SELECT raw->>'messageId' AS id FROM webhook_payloads")
    assert sorted(row.id for row in rows) == sorted(
        body["messageId"] for body in first + while_down
    )


# --- the process killed right after answering --------------------------------------------


class IngestProcess:
    """`zapgate-ingest run` as a child process; its JSON log lines are read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                async with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()

    async def wait_line(
        self, event: str, timeout: float = 30, *, process: str | None = None
    ) -> dict[str, Any]:
        """The first line of `event` from the gateway (`process` None) or from its archiver
        child (`process="archiver"`, the lines it binds `process` in)."""

        def found() -> dict[str, Any] | None:
            return next(
                (
                    line
                    for line in self.lines
                    if line.get("event") == event and line.get("process") == process
                ),
                None,
            )

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        line = found()
        assert line is not None
        return line

    async def wait_archived(self, count: int, timeout: float = 60) -> None:
        """Return once the archiver child's `batch_handled` lines add up to `count` acked."""

        def archived() -> int:
            return sum(
                line.get("outcomes", {}).get("acked", 0)
                for line in self.lines
                if line.get("event") == "batch_handled" and line.get("process") == "archiver"
            )

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: archived() >= count)

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        # The reader ends when every writer of the pipe is gone: the archiver child too.
        await self._reader


@pytest.fixture
async def spawn_ingest() -> AsyncIterator[Callable[..., Any]]:
    started: list[IngestProcess] = []

    async def spawn(env: dict[str, str]) -> IngestProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zapgate.ingest.cli",
            "run",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        child = IngestProcess(process)
        started.append(child)
        return child

    yield spawn
    for child in started:
        if child.process.returncode is None:
            await child.kill()


def process_env(nats_url: str, database_url: str, spool_dir: Path) -> dict[str, str]:
    prefix = "ZAPGATE_INGEST_"
    return {
        f"{prefix}ENVIRONMENT": "test",
        f"{prefix}WEBHOOK_SECRETS": SECRET,
        f"{prefix}NATS_URL": nats_url,
        f"{prefix}DATABASE_URL": database_url,
        f"{prefix}SPOOL_DIR": str(spool_dir),
        f"{prefix}HTTP_HOST": "127.0.0.1",
        f"{prefix}HTTP_PORT": "0",
        f"{prefix}PROBE_HOST": "127.0.0.1",
        f"{prefix}PROBE_PORT": "0",
        f"{prefix}SPOOL_DRAIN_INTERVAL": "PT0.05S",
        f"{prefix}LOG_JSON": "true",
    }


async def test_process_killed_right_after_answering_loses_nothing(
    spawn_ingest: Callable[..., Any],
    fault_nats_server: Callable[..., NatsServer],
    database_url: str,
    tmp_path: Path,
) -> None:
    """SIGKILL right after the last 200, on the JetStream path and on the spool path."""
    server = fault_nats_server()
    env = process_env(server.url, database_url, tmp_path / "spool")
    watcher = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    collector = Collector()
    await watcher.subscribe(subjects.WEBHOOKS_ALL, cb=collector.on_message)
    try:
        first = await spawn_ingest(env)
        port = (await first.wait_line("ingest_listening"))["port"]
        await first.wait_line("nats_connected")
        published = webhooks(30, "KILLED")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert set(await post_all(client, published)) == {"published"}
        await first.kill()
        assert await stream_count(watcher) == 30

        await asyncio.to_thread(server.stop)
        second = await spawn_ingest(env)
        port = (await second.wait_line("ingest_listening"))["port"]
        spooled = webhooks(12, "SPOOLKILL")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert set(await post_all(client, spooled)) == {"spooled"}
        await second.kill()

        await asyncio.to_thread(server.start)
        third = await spawn_ingest(env)
        await third.wait_line("nats_connected")
        await collector.wait_for(42, timeout=30)
        await third.wait_line("spool_drained")
        await third.kill()
    finally:
        await watcher.close()
    nc = await nats.connect(server.url)
    try:
        messages = await stream_messages(nc)
    finally:
        await nc.close()
    assert_each_once(messages, {body["messageId"] for body in published + spooled})


async def test_run_archives_in_a_child_process_that_ends_with_the_gateway(
    spawn_ingest: Callable[..., Any], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """`zapgate-ingest run` archives in its own child process (the webhook loop does nothing
    else); a SIGKILL of the gateway ends the child too (its stdin pipe closes)."""
    env = process_env(nats_url, database_url, tmp_path / "spool")
    gateway = await spawn_ingest(env)
    port = (await gateway.wait_line("ingest_listening"))["port"]
    started = await gateway.wait_line("archiver_process_started")
    await gateway.wait_line("archiver_started", process="archiver")
    gateway_nice = os.getpriority(os.PRIO_PROCESS, gateway.process.pid)
    assert os.getpriority(os.PRIO_PROCESS, started["pid"]) == min(19, gateway_nice + 10)
    await gateway.wait_line("nats_connected")
    bodies = webhooks(20, "CHILD")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert set(await post_all(client, bodies)) == {"published"}
    await gateway.wait_archived(len(bodies))
    sql = "SELECT raw->>'messageId' AS id FROM webhook_payloads WHERE raw->>'messageId' LIKE :p"
    rows = await query(database_url, sql, p="CHILD%")

    await gateway.kill()  # returns once the child closed its end of the output pipe

    assert sorted(row.id for row in rows) == sorted(body["messageId"] for body in bodies)
    stopped = await gateway.wait_line("archiver_stopped", timeout=0, process="archiver")
    assert stopped["archived"] == len(bodies)
    await _exited(started["pid"], timeout=10)


async def _exited(pid: int, timeout: float) -> None:
    """Return once process `pid` (not our child) has exited: its pidfd becomes readable."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pidfd, ended.set)
    try:
        await asyncio.wait_for(ended.wait(), timeout)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


# --- the archiver child's metrics on the gateway's /metrics ------------------------------


def samples_of(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics body, by (name, labels); parsed by prometheus_client."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def assert_one_help_and_type_per_family(body: str) -> None:
    for kind in ("# HELP ", "# TYPE "):
        names = [line.split()[2] for line in body.splitlines() if line.startswith(kind)]
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


async def test_the_gateways_metrics_show_the_archiver_childs_counters_as_they_move(
    spawn_ingest: Callable[..., Any], nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """`zapgate-ingest run`: the archiver child's consumer and dead-letter counters are on the
    GATEWAY's /metrics (its probe port), labelled process="archiver", in one valid exposition;
    an archived and a dead-lettered message move them there."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:  # PostgreSQL refuses this one message, every try
            await conn.execute(
                sa.text(
                    "ALTER TABLE webhook_payloads ADD CONSTRAINT refuse_metrics_poison "
                    "CHECK (raw->>'messageId' IS DISTINCT FROM 'METRICSPOISON')"
                )
            )
    finally:
        await engine.dispose()
    env = process_env(nats_url, database_url, tmp_path / "spool")
    env["ZAPGATE_INGEST_ARCHIVER_MAX_FAILURES"] = "2"
    env["ZAPGATE_INGEST_ARCHIVER_RETRY_DELAY"] = "PT0.05S"
    gateway = await spawn_ingest(env)
    port = (await gateway.wait_line("ingest_listening"))["port"]
    probe_port = (await gateway.wait_line("ingest_started"))["probe_port"]
    await gateway.wait_line("archiver_started", process="archiver")
    await gateway.wait_line("nats_connected")
    acked = (
        "zapgate_consumer_messages_total",
        frozenset({("consumer", "ingest-archiver"), ("outcome", "acked"), ("process", "archiver")}),
    )
    dead = (
        "zapgate_dead_letters_total",
        frozenset(
            {
                ("consumer", "ingest-archiver"),
                ("reason_code", "archive_failed"),
                ("process", "archiver"),
            }
        ),
    )
    up = ("zapgate_child_metrics_up", frozenset({("process", "archiver")}))
    probe = f"http://127.0.0.1:{probe_port}/metrics"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        before = samples_of((await client.get(probe)).text)
        assert before[up] == 1
        assert before.get(acked, 0) == 0
        assert before.get(dead, 0) == 0
        bodies = [*webhooks(2, "METRICSOK"), samples.received_text("METRICSPOISON")]
        assert set(await post_all(client, bodies)) == {"published"}
        await gateway.wait_archived(2)
        await gateway.wait_line("message_dead_lettered", process="archiver")
        answer = await client.get(probe)
    assert answer.status_code == 200
    assert_one_help_and_type_per_family(answer.text)
    after = samples_of(answer.text)
    assert after[acked] == 2
    assert after[dead] == 1
    assert after[up] == 1
    # The gateway's own families are still there, without the child's label.
    assert ("zapgate_ingest_spool_pending", frozenset()) in after
