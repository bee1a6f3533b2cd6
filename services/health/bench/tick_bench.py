"""Benchmark: one health tick over N instances against the W-API simulator over real HTTP.

    .venv/bin/python services/health/bench/tick_bench.py --instances 10000 --concurrency 64

Starts an embedded PostgreSQL (or uses $ZAPGATE_TEST_DATABASE_URL) and the simulator, registers
N complete sessions, runs a first tick (status-instance + fetch-instance each) and a second
(status-instance only, phones fresh), and prints seconds per tick and provider calls per second.
Events go to a publisher that only counts them: this measures checks, not NATS. Then, as the
baseline, a bare loop makes one status-instance call per instance with one httpx client at the
same concurrency. `--json PATH` writes the figures for `bench/run.py`.
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from zapgate.devservers.postgres_for_tests import postgres_for_tests
from zapgate.health.adapters.db import PostgresHealthRepository, instances
from zapgate.health.adapters.timer import AsyncioTimer
from zapgate.health.migrations import SPEC
from zapgate.health.ports import HealthEvent
from zapgate.health.service import HealthService
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.db import create_engine, migrate
from zapgate.runtime.logging import configure_logging
from zapgate.wapi.client import WapiClient, WapiLimits
from zapgate.wapi.simulator.server import SimulatorServer


class CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    async def publish(self, event: HealthEvent) -> None:
        del event
        self.count += 1


async def bare_status_loop(
    sim: SimulatorServer, ids: list[str], concurrency: int
) -> dict[str, float]:
    """One status-instance call per instance straight to the simulator, `concurrency` at once."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    pending = iter(ids)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            for instance_id in pending:
                await client.get(
                    f"{sim.base_url}/instance/status-instance",
                    params={"instanceId": instance_id},
                    headers={"Authorization": "Bearer t"},
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "calls": len(ids), "calls_per_s": len(ids) / elapsed}


async def bare_aiohttp_status_loop(
    sim: SimulatorServer, ids: list[str], concurrency: int
) -> dict[str, float]:
    """The same calls as `bare_status_loop` over one aiohttp session: the provider-call ceiling
    (issue 17's baseline; httpx's own pool limits the httpx loop)."""
    pending = iter(ids)
    url = f"{sim.base_url}/instance/status-instance"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for instance_id in pending:
                async with session.get(
                    url, params={"instanceId": instance_id}, headers={"Authorization": "Bearer t"}
                ) as answer:
                    await answer.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "calls": len(ids), "calls_per_s": len(ids) / elapsed}


async def bench(url: str, sim: SimulatorServer, count: int, concurrency: int) -> dict[str, object]:
    engine = create_engine(url, pool_size=10)
    clock = ManualClock()
    now = clock.now()
    ids = [f"B{n:05d}" for n in range(count)]
    rows: list[dict[str, object]] = [
        {
            "instance_id": instance_id,
            "display_name": f"bench {instance_id}",
            "token": "t",
            "created_at": now,
            "updated_at": now,
        }
        for instance_id in ids
    ]
    for instance_id in ids:
        sim.simulator.add_instance(instance_id, "t", phone=f"55119{instance_id[1:]}")
    async with engine.begin() as conn:
        await conn.execute(sa.insert(instances), rows)
    settings = HealthSettings(
        environment="dev",
        database_url=SecretStr(url),
        provider_concurrency=concurrency,
        apply_batch_size=200,
    )
    async with WapiClient(base_url=sim.base_url, limits=WapiLimits(total=concurrency)) as wapi:
        publisher = CountingPublisher()
        service = HealthService(
            repository=PostgresHealthRepository(engine),
            provider=wapi,
            publisher=publisher,
            clock=clock,
            timer=AsyncioTimer(),
            settings=settings,
        )
        ticks: list[dict[str, object]] = []
        for label in ("first tick (status + fetch-instance)", "second tick (status only)"):
            calls_before = len(sim.simulator.calls())
            started = time.perf_counter()
            report = await service.tick()
            elapsed = time.perf_counter() - started
            calls = len(sim.simulator.calls()) - calls_before
            sys.stdout.write(
                f"{label}: {report.checked} instances in {elapsed:.2f} s, "
                f"{calls} provider calls, {calls / elapsed:.0f} calls/s, "
                f"{report.transitions} transitions, {publisher.count} events published\n"
            )
            ticks.append(
                {
                    "label": label,
                    "checked": report.checked,
                    "seconds": elapsed,
                    "calls": calls,
                    "calls_per_s": calls / elapsed,
                }
            )
            clock.advance(timedelta(minutes=5))
    await engine.dispose()
    bare = await bare_status_loop(sim, ids, concurrency)
    bare_aiohttp = await bare_aiohttp_status_loop(sim, ids, concurrency)
    sys.stdout.write(
        f"bare httpx loop (status only): {bare['calls']:.0f} calls in {bare['seconds']:.2f} s, "
        f"{bare['calls_per_s']:.0f} calls/s\n"
        f"bare aiohttp loop (status only): {bare_aiohttp['calls_per_s']:.0f} calls/s\n"
    )
    return {
        "instances": count,
        "concurrency": concurrency,
        "tick_interval_s": settings.tick_interval.total_seconds(),
        "ticks": ticks,
        "bare": bare,
        "bare_aiohttp": bare_aiohttp,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    configure_logging(json=False, level="WARNING")  # per-call debug lines would dominate
    with tempfile.TemporaryDirectory() as tmp:
        postgres = postgres_for_tests(Path(tmp) / "pg", use_docker=False)
        name = f"zg_bench_{uuid.uuid4().hex[:8]}"
        postgres.create_database(name)
        try:
            url = postgres.url(name)
            migrate(url, SPEC)
            with SimulatorServer() as sim:
                figures = asyncio.run(bench(url, sim, args.instances, args.concurrency))
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
        finally:
            postgres.drop_database(name)
            postgres.close()


if __name__ == "__main__":
    main()
