"""zapgate.runtime over the real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from zapgate.runtime.db import MigrationSpec, create_engine, migrate, ping
from zapgate.runtime.probes import (
    CHECK_FAILED,
    CHECK_TIMEOUT,
    CHECK_UNREACHABLE,
    create_probe_app,
    database_check,
    nats_check,
    serve_probes,
)
from zapgate.runtime.settings import ServiceSettings
from zapgate.runtime.streams import StreamSpec, ensure_schedule, ensure_streams

pytestmark = pytest.mark.real

SAMPLE = MigrationSpec(
    service="sample",
    script_location=str(Path(__file__).parent / "migrations"),
    version_table="alembic_version_sample",
)


async def test_migrate_applies_head_once_with_its_own_version_table(database_url: str) -> None:
    """migrate() creates the table, records head in its own version table, and is idempotent."""
    await asyncio.to_thread(migrate, database_url, SAMPLE)
    await asyncio.to_thread(migrate, database_url, SAMPLE)
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version_sample"))
        assert versions.scalars().all() == ["0002"]
        assert (await conn.execute(sa.text("SELECT count(*) FROM widgets"))).scalar_one() == 0
        default_table = await conn.execute(sa.text("SELECT to_regclass('alembic_version')"))
        assert default_table.scalar_one() is None
    await ping(engine)
    await engine.dispose()


async def test_ensure_streams_creates_then_updates_idempotently(nats_url: str) -> None:
    """Running ensure_streams twice is harmless, and a changed spec updates the stream."""
    nc = await nats.connect(nats_url)
    spec = StreamSpec("RT_A", ("rt.a.>",), max_age=timedelta(hours=1))
    await ensure_streams(nc, [spec])
    await ensure_streams(nc, [spec])
    await ensure_streams(nc, [StreamSpec("RT_A", ("rt.a.>", "rt.b"), max_age=timedelta(hours=2))])
    info = await nc.jetstream().stream_info("RT_A")
    assert info.config.subjects == ["rt.a.>", "rt.b"]
    assert info.config.max_age == 7200
    await nc.close()


async def test_ensure_schedule_makes_the_server_publish_ticks_once(nats_url: str) -> None:
    """A schedule installed twice is stored once, and the server produces ticks on the target."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    spec = StreamSpec("RT_TICKS", ("rt.tick.>",), allow_msg_schedules=True, storage="memory")
    await ensure_streams(nc, [spec])
    ticks = await js.pull_subscribe("rt.tick.health", stream="RT_TICKS")

    first = await ensure_schedule(
        nc,
        stream="RT_TICKS",
        schedule_subject="rt.tick.schedule",
        target_subject="rt.tick.health",
        every=timedelta(seconds=1),
        body=b"tick",
    )
    again = await ensure_schedule(
        nc,
        stream="RT_TICKS",
        schedule_subject="rt.tick.schedule",
        target_subject="rt.tick.health",
        every=timedelta(seconds=1),
        body=b"tick",
    )

    assert (first, again) == (True, False)
    [tick] = await ticks.fetch(1, timeout=5)
    assert tick.data == b"tick"
    await nc.close()


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_probes_report_ready_when_nats_and_database_answer(
    nats_url: str, database_url: str
) -> None:
    """/healthz and /readyz say ok over real NATS and PostgreSQL; /metrics exposes the registry."""
    nc = await nats.connect(nats_url)
    engine = create_engine(database_url)
    registry = CollectorRegistry()
    Counter("zg_probe_test", "a test counter", registry=registry).inc()
    app = create_probe_app(
        {"nats": nats_check(nc), "database": database_check(engine)}, registry=registry
    )
    probes = await serve_probes(app, "127.0.0.1", 0)
    try:
        assert (await _get(probes.port, "/healthz"))[0] == 200
        status, body = await _get(probes.port, "/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, body = await _get(probes.port, "/metrics")
        assert status == 200
        assert b"zg_probe_test_total 1.0" in body
    finally:
        await probes.stop()
        await nc.close()
        await engine.dispose()


async def test_readyz_is_503_with_a_code_per_failed_check_and_no_exception_text() -> None:
    """A raising check and a hanging check make /readyz 503, each named with a code only: the
    exceptions' text (which can hold hosts, instance ids, payload data) never reaches the
    answer. Every code of the module is produced."""
    never = asyncio.Event()
    leaked = "instance DEMO-42 token tok-SECRET-123 at db.internal:5432"

    async def refused() -> None:
        raise ConnectionRefusedError(leaked)

    async def broken() -> None:
        raise RuntimeError(leaked)

    async def hangs() -> None:
        await never.wait()

    app = create_probe_app(
        {"db": refused, "nats": hangs, "store": broken, "fine": ping_ok}, check_timeout=0.2
    )
    probes = await serve_probes(app, "127.0.0.1", 0)
    try:
        status, body = await _get(probes.port, "/readyz")
        metrics_status, metrics = await _get(probes.port, "/metrics")
    finally:
        await probes.stop()
    assert status == 503
    assert json.loads(body) == {
        "status": "unavailable",
        "failed": {"db": CHECK_UNREACHABLE, "nats": CHECK_TIMEOUT, "store": CHECK_FAILED},
    }
    assert metrics_status == 200
    for fragment in ("DEMO-42", "tok-SECRET", "db.internal", "RuntimeError", "Refused"):
        assert fragment.encode() not in body + metrics


def test_probes_bind_loopback_unless_configured() -> None:
    """The settings base defaults probe_host to 127.0.0.1 (prod-safe); it is configurable."""

    class Probed(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="ZAPGATE_PROBED_")

    url = "postgresql://u:Xq8-jT2v9LmP4wRz7KcN1bYh6DsF3gUe@127.0.0.1/db"
    default = Probed(environment="dev", database_url=SecretStr(url))
    configured = Probed(environment="dev", database_url=SecretStr(url), probe_host="0.0.0.0")  # noqa: S104 - the configured case
    assert default.probe_host == "127.0.0.1"
    assert configured.probe_host == "0.0.0.0"  # noqa: S104 - the configured case


async def ping_ok() -> None:
    return None


async def test_a_connection_idle_past_ping_idle_after_is_pinged_and_replaced_when_dead(
    database_url: str,
) -> None:
    """With `ping_idle_after`, a connection that sat in the pool that long is pinged when handed
    out: one the server ended meanwhile is replaced and the statement runs on a new one. A
    connection back a moment ago is handed out unpinged (no round trip per statement): an end
    the server made meanwhile shows at its first statement, as an outage."""
    select_pid = sa.text("SELECT pg_backend_pid()")
    pinged = create_engine(database_url, pool_size=1, max_overflow=0, ping_idle_after=timedelta(0))
    trusted = create_engine(
        database_url, pool_size=1, max_overflow=0, ping_idle_after=timedelta(hours=1)
    )
    killer = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        pids = []
        for engine in (pinged, trusted):
            async with engine.connect() as conn:
                pids.append((await conn.execute(select_pid)).scalar_one())
        async with killer.connect() as conn:
            for pid in pids:
                # The timeout form returns once the backend is gone (PostgreSQL 14+).
                ended = sa.text("SELECT pg_terminate_backend(:pid, 10000)")
                assert (await conn.execute(ended, {"pid": pid})).scalar_one() is True

        async with pinged.connect() as conn:
            replaced = (await conn.execute(select_pid)).scalar_one()
        with pytest.raises(sa.exc.DBAPIError):
            async with trusted.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        assert replaced != pids[0]
    finally:
        for engine in (pinged, trusted, killer):
            await engine.dispose()
