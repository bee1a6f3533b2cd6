"""Benchmark: health ticks over N instances against the W-API simulator over real HTTP.

    PYTHONPATH=. .venv/bin/python services/health/bench/tick_bench.py \
        [--instances 10000] [--concurrency 64] [--rounds 3] [--big 100000] [--profile PATH]

The simulator runs in its own process (as W-API does), seeded with every instance; PostgreSQL is
an embedded server (or $ZAPGATE_TEST_DATABASE_URL). N complete sessions are registered with
encrypted tokens, as the service stores them. Events go to a publisher that only counts them:
this measures checks, decisions and state writes, not NATS.

- **first tick**: every instance unknown, so status-instance + fetch-instance each (once);
- **steady tick** (rounds): the clock moves one tick interval, phones are fresh, so
  status-instance only; every instance's state is still written (evidence time);
- **bare aiohttp status loop** (the ceiling, issue 17) and **bare httpx status loop**: one
  status-instance call per instance at the same concurrency, nothing else.

Each round runs the steady tick and the two bare loops in a rotating order; the report gives
medians of the rounds (calls/s). The httpx loop is ten times slower than aiohttp here, so it
makes `--httpx-calls` calls per round (its calls/s is the figure).

`--big N` (e.g. 100000) then adds instances up to N **as a running system has them**: connected,
with the status the first tick gave the first instances, each phone known and shown at an age
spread evenly over that instance's phone refresh age (so the tick looks up the share of phones a
running system refreshes per tick, about one in nine at PT1H). It runs a bare aiohttp status
loop over all N and a bare httpx loop of `--httpx-calls` calls, one tick over all N (provider
calls by operation reported), and the bare aiohttp loop again (the tick is compared with the mean
of the two): does a tick fit inside the 5-minute tick interval?
`--big-first` adds them as new instead (state unknown, no phone) and runs their first tick
(status-instance + fetch-instance each, as after a bulk registration) before the steady one:
about twice the calls, so minutes longer.
`--profile PATH` profiles one more steady tick with cProfile in CPU time of the benchmark's own
thread (the simulator and PostgreSQL are other processes) and prints where the time goes.
`--json PATH` writes the figures for `bench/run.py`. Nothing here asserts: the figures are the
result.
"""

from __future__ import annotations

# ruff: noqa: INP001, T201 - a script run by path that prints its figures
import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import sqlalchemy as sa
import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import BIN, ProcessFailedError, ServiceProcess
from zapgate.devservers.postgres import free_port
from zapgate.devservers.postgres_for_tests import postgres_for_tests
from zapgate.health.adapters.db import PostgresHealthRepository, instances
from zapgate.health.adapters.timer import AsyncioTimer
from zapgate.health.check import phone_refresh_age
from zapgate.health.migrations import SPEC
from zapgate.health.ports import HealthEvent
from zapgate.health.service import HealthService, RoundReport
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import ManualClock
from zapgate.runtime.db import create_engine, migrate
from zapgate.runtime.logging import configure_logging
from zapgate.runtime.token_crypto import DEV_TOKEN_KEY, TokenCipher
from zapgate.wapi.client import WapiClient, WapiLimits
from zapgate.wapi.metrics import WapiMetrics
from zapgate.wapi.simulator.app import create_app
from zapgate.wapi.simulator.engine import SimulatorEngine
from zapgate.wapi.simulator.models import InstanceSpec
from zapgate.wapi.simulator.protocol import ClosableHttpProtocol

TOKEN = "bench-token"  # noqa: S105 - the simulator's token for every bench instance
SIMULATOR_READY_S = 600.0
OPERATIONS = ("status-instance", "fetch-instance", "device", "restart")


def instance_id(n: int) -> str:
    return f"H{n:06d}"


# --- the simulator's process --------------------------------------------------------------------


def serve_simulator(port: int, count: int) -> None:
    """Run the simulator with `count` complete sessions (the child process's whole life)."""
    configure_logging(json=True, level="WARNING")
    engine = SimulatorEngine()
    for n in range(count):
        engine.add_instance(
            InstanceSpec.model_validate(
                {"instance_id": instance_id(n), "token": TOKEN, "phone": f"5511{n:09d}"}
            )
        )
    uvicorn.run(
        create_app(engine),
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        http=ClosableHttpProtocol,
        timeout_graceful_shutdown=2,
    )


def start_simulator(log_dir: Path, count: int) -> tuple[ServiceProcess, str]:
    port = free_port()
    argv = [
        str(BIN / "python"),
        str(Path(__file__).resolve()),
        "--serve-simulator",
        str(port),
        "--instances",
        str(count),
    ]
    process = ServiceProcess("simulator", argv, log_dir).start()
    root = f"http://127.0.0.1:{port}"
    try:
        # Seeding many instances on a loaded machine can take longer than procs' 60 s.
        deadline = time.monotonic() + SIMULATOR_READY_S
        while True:
            try:
                process.wait_ready(root + "/", any_status=True)
                break
            except ProcessFailedError:
                if not process.alive() or time.monotonic() > deadline:
                    raise
    except BaseException:
        process.stop()
        raise
    return process, root


# --- bare loops -----------------------------------------------------------------------------------


def _figures(calls: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    """Wall seconds and calls/s, plus this thread's CPU per call (`cpu_ms_per_call`): what the
    loop costs the machine, steadier than wall time when other work shares the cores; and the
    machine's load average (1, 5, 15 min) when it ended."""
    return {
        "seconds": seconds,
        "calls": calls,
        "calls_per_s": calls / seconds,
        "cpu_ms_per_call": cpu_s * 1000 / calls,
        "load_average": os.getloadavg(),
    }


async def bare_httpx_loop(base_url: str, ids: list[str], concurrency: int) -> dict[str, float]:
    """One status-instance call per id with one plain httpx client, `concurrency` at once."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    pending = iter(ids)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def call(iid: str) -> None:
            answer = await client.get(
                f"{base_url}/instance/status-instance",
                params={"instanceId": iid},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            await answer.aread()

        async def worker() -> None:
            for iid in pending:
                try:
                    await call(iid)
                except httpx.RemoteProtocolError:  # a kept connection the server closed idle
                    await call(iid)  # once more, as WapiClient retries a read

        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return _figures(len(ids), time.perf_counter() - started, time.thread_time() - cpu)


async def bare_aiohttp_loop(base_url: str, ids: list[str], concurrency: int) -> dict[str, float]:
    """The same calls over one aiohttp session: the provider-call ceiling (issue 17)."""
    pending = iter(ids)
    url = f"{base_url}/instance/status-instance"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(iid: str) -> None:
            async with session.get(
                url, params={"instanceId": iid}, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as answer:
                await answer.read()

        async def worker() -> None:
            for iid in pending:
                try:
                    await call(iid)
                except aiohttp.ServerDisconnectedError:  # a kept connection closed idle
                    await call(iid)  # once more, as WapiClient retries a read

        started, cpu = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return _figures(len(ids), time.perf_counter() - started, time.thread_time() - cpu)


# --- health's side --------------------------------------------------------------------------------


class CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    async def publish(self, event: HealthEvent) -> None:
        del event
        self.count += 1


class Calls:
    """Provider calls by operation, read from the client's own metrics (no log to parse)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def snapshot(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for metric in self._registry.collect():
            for sample in metric.samples:
                if sample.name == "zapgate_wapi_call_duration_seconds_count":
                    operation = sample.labels["operation"]
                    counts[operation] = counts.get(operation, 0) + int(sample.value)
        return counts

    def since(self, before: dict[str, int]) -> dict[str, int]:
        now = self.snapshot()
        return {op: now.get(op, 0) - before.get(op, 0) for op in OPERATIONS if op in now}


async def register(engine: AsyncEngine, start: int, stop: int, clock: ManualClock) -> None:
    """Rows as `register` writes them (token encrypted), inserted in bulk."""
    cipher = TokenCipher([DEV_TOKEN_KEY])
    now = clock.now()
    for first in range(start, stop, 5000):
        rows = [
            {
                "instance_id": instance_id(n),
                "display_name": f"Loja {n}",
                "token": cipher.encrypt(TOKEN),
                "created_at": now,
                "updated_at": now,
            }
            for n in range(first, min(first + 5000, stop))
        ]
        async with engine.begin() as conn:
            await conn.execute(sa.insert(instances), rows)


class Bench:
    def __init__(self, service: HealthService, clock: ManualClock, calls: Calls) -> None:
        self.service = service
        self.clock = clock
        self.calls = calls
        self.interval = timedelta(minutes=5)

    async def tick(self, label: str, profile: cProfile.Profile | None = None) -> dict[str, Any]:
        self.clock.advance(self.interval)
        before = self.calls.snapshot()
        started, cpu = time.perf_counter(), time.thread_time()
        if profile is not None:
            profile.enable()
        report: RoundReport = await self.service.tick()
        if profile is not None:
            profile.disable()
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        calls = self.calls.since(before)
        total = sum(calls.values())
        figures = {
            "label": label,
            "checked": report.checked,
            "seconds": elapsed,
            "calls": total,
            "calls_by_operation": calls,
            "calls_per_s": total / elapsed,
            "checks_per_s": report.checked / elapsed,
            "cpu_ms_per_call": cpu * 1000 / max(total, 1),
            "cpu_ms_per_check": cpu * 1000 / max(report.checked, 1),
            "transitions": report.transitions,
            "load_average": os.getloadavg(),
        }
        print(
            f"{label}: {report.checked} instances in {elapsed:.2f} s "
            f"({figures['checks_per_s']:.0f} checks/s, "
            f"{figures['cpu_ms_per_check']:.2f} ms CPU each), calls {calls}, "
            f"{report.transitions} transitions, load {_load(figures)}",
            flush=True,
        )
        return figures


def _load(figures: dict[str, Any]) -> str:
    return ", ".join(f"{x:.1f}" for x in figures["load_average"])


_SEEDED_STATUS = (
    "state",
    "reason",
    "since",
    "state_observed_at",
    "outage_started_at",
    "outage_notified",
    "good_since",
    "episode_flaps",
    "instability_notified",
    "blip_count",
    "last_check_at",
)


async def register_running(  # noqa: PLR0913 - the knobs of the seeding
    engine: AsyncEngine,
    start: int,
    stop: int,
    clock: ManualClock,
    *,
    phone_max_age: timedelta,
    template: str,
) -> None:
    """Rows as a running system has them: `template`'s status (an instance the first tick
    found connected with its phone), each with its own phone (the simulator's), shown at an age
    drawn evenly from [0, its refresh age) (a fixed seed: the same rows every run)."""
    cipher = TokenCipher([DEV_TOKEN_KEY])
    token = cipher.encrypt(TOKEN)  # one ciphertext: the rows differ in nothing a tick reads
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                sa.select(*(instances.c[name] for name in _SEEDED_STATUS)).where(
                    instances.c.instance_id == template
                )
            )
        ).one()
    status = dict(zip(_SEEDED_STATUS, found, strict=True))
    draw = random.Random(17)  # noqa: S311 - spread of ages, not a secret
    now = clock.now()
    for first in range(start, stop, 5000):
        rows = []
        for n in range(first, min(first + 5000, stop)):
            iid = instance_id(n)
            age = phone_refresh_age(iid, phone_max_age) * draw.random()
            rows.append(
                {
                    **status,
                    "instance_id": iid,
                    "display_name": f"Loja {n}",
                    "token": token,
                    "phone": f"5511{n:09d}",
                    "phone_observed_at": now - age,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        async with engine.begin() as conn:
            await conn.execute(sa.insert(instances), rows)


def _median_side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["calls_per_s"] for r in runs]
    middle = sorted(runs, key=lambda r: r["calls_per_s"])[len(runs) // 2]
    return {**middle, "calls_per_s": statistics.median(rates), "per_round": rates}


async def rounds(  # noqa: PLR0913, PLR0917 - the knobs of the run
    bench: Bench,
    base_url: str,
    ids: list[str],
    concurrency: int,
    count: int,
    httpx_calls: int,
) -> dict[str, Any]:
    sides: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "steady": lambda: bench.tick("steady tick (status only)"),
        "bare_aiohttp": lambda: bare_aiohttp_loop(base_url, ids, concurrency),
        "bare_httpx": lambda: bare_httpx_loop(base_url, ids[:httpx_calls], concurrency),
    }
    names = list(sides)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(count):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            figures = await sides[name]()
            runs[name].append(figures)
            if name != "steady":
                print(
                    f"round {index + 1} {name}: {figures['calls_per_s']:.0f} calls/s, "
                    f"{figures['cpu_ms_per_call']:.2f} ms CPU each, load {_load(figures)}",
                    flush=True,
                )
    return {name: _median_side(values) for name, values in runs.items()}


def print_profile(profile: cProfile.Profile, path: Path) -> list[str]:
    profile.dump_stats(str(path))
    lines: list[str] = []
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(sort).print_stats(30)
        text = out.getvalue()
        print(text)
        lines.append(text)
    return lines


async def run(args: argparse.Namespace, url: str, base_url: str) -> dict[str, Any]:
    engine = create_engine(url, pool_size=10)
    clock = ManualClock()
    await register(engine, 0, args.instances, clock)
    settings = HealthSettings(
        environment="dev",
        database_url=SecretStr(url),
        provider_concurrency=args.concurrency,
    )
    registry = CollectorRegistry()
    calls = Calls(registry)
    figures: dict[str, Any] = {
        "instances": args.instances,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "tick_interval_s": settings.tick_interval.total_seconds(),
        "apply_batch_size": settings.apply_batch_size,
        "phone_max_age_s": settings.phone_max_age.total_seconds(),
    }
    ids = [instance_id(n) for n in range(args.instances)]
    limits = WapiLimits(total=args.concurrency)
    metrics = WapiMetrics.for_registry(registry)
    async with WapiClient(base_url=base_url, limits=limits, metrics=metrics) as wapi:
        publisher = CountingPublisher()
        service = HealthService(
            repository=PostgresHealthRepository(engine),
            provider=wapi,
            publisher=publisher,
            clock=clock,
            timer=AsyncioTimer(),
            settings=settings,
        )
        bench = Bench(service, clock, calls)
        first_profile = cProfile.Profile(time.thread_time) if args.profile else None
        figures["first"] = await bench.tick("first tick (status + fetch-instance)", first_profile)
        if first_profile is not None and args.profile is not None:
            print_profile(first_profile, args.profile.with_suffix(".first.prof"))
        # Warm-up of the bare loops' code paths (the service is warm after its first tick).
        await bare_aiohttp_loop(base_url, ids[: args.concurrency * 4], args.concurrency)
        await bare_httpx_loop(base_url, ids[: args.concurrency * 4], args.concurrency)
        figures.update(
            await rounds(
                bench, base_url, ids, args.concurrency, args.rounds, min(args.httpx_calls, len(ids))
            )
        )
        steady = figures["steady"]["calls_per_s"]
        figures["ratio_aiohttp"] = steady / figures["bare_aiohttp"]["calls_per_s"]
        figures["ratio_httpx"] = steady / figures["bare_httpx"]["calls_per_s"]
        print(
            f"steady tick median {steady:.0f} calls/s: {figures['ratio_aiohttp']:.2f} of bare "
            f"aiohttp ({figures['bare_aiohttp']['calls_per_s']:.0f}), "
            f"{figures['ratio_httpx']:.2f} of bare httpx "
            f"({figures['bare_httpx']['calls_per_s']:.0f})",
            flush=True,
        )
        if args.profile is not None:
            # CPU time of this thread: waiting for the simulator or PostgreSQL (other processes
            # on the same cores) is not this process's cost.
            profile = cProfile.Profile(time.thread_time)
            await bench.tick("profiled steady tick", profile)
            figures["profile"] = print_profile(profile, args.profile)
        if args.big > args.instances:
            figures["big"] = await big_ticks(args, engine, bench, base_url, settings)
    figures["load_average"] = os.getloadavg()
    await engine.dispose()
    return figures


async def big_ticks(
    args: argparse.Namespace,
    engine: AsyncEngine,
    bench: Bench,
    base_url: str,
    settings: HealthSettings,
) -> dict[str, Any]:
    """`--big`: instances up to `args.big` (as running, or new with `--big-first`); a bare
    aiohttp loop over all and a bare httpx loop of a sample, the tick(s) over all of them, the
    bare aiohttp loop again."""
    started = time.perf_counter()
    if args.big_first:
        await register(engine, args.instances, args.big, bench.clock)
    else:
        await register_running(
            engine,
            args.instances,
            args.big,
            bench.clock,
            phone_max_age=settings.phone_max_age,
            template=instance_id(0),
        )
    big: dict[str, Any] = {
        "instances": args.big,
        "seeded": "new" if args.big_first else "running",
        "seed_s": time.perf_counter() - started,
    }
    print(f"{args.big - args.instances} more instances in {big['seed_s']:.1f} s", flush=True)
    big_ids = [instance_id(n) for n in range(args.big)]

    async def loop(name: str, run: Awaitable[dict[str, Any]]) -> None:
        big[name] = figures = await run
        print(
            f"{name} over {figures['calls']}: {figures['calls_per_s']:.0f} calls/s, "
            f"{figures['seconds']:.1f} s, load {_load(figures)}",
            flush=True,
        )

    # The bare aiohttp loop before and after the ticks (the load of a shared machine moves in
    # minutes; the tick is judged against their mean), the httpx sample before.
    await loop("bare_aiohttp_before", bare_aiohttp_loop(base_url, big_ids, args.concurrency))
    await loop(
        "bare_httpx", bare_httpx_loop(base_url, big_ids[: args.httpx_calls], args.concurrency)
    )
    if args.big_first:
        big["first"] = await bench.tick(f"first tick over {args.big}")
    big["tick"] = await bench.tick(f"tick over {args.big}")
    await loop("bare_aiohttp", bare_aiohttp_loop(base_url, big_ids, args.concurrency))
    tick_rate = big["tick"]["calls_per_s"]
    aiohttp_rate = statistics.mean(
        big[name]["calls_per_s"] for name in ("bare_aiohttp_before", "bare_aiohttp")
    )
    big["ratio_aiohttp"] = tick_rate / aiohttp_rate
    big["ratio_httpx"] = tick_rate / big["bare_httpx"]["calls_per_s"]
    big["wall_s"] = time.perf_counter() - started
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--httpx-calls", type=int, default=3000)
    parser.add_argument("--big", type=int, default=0, help="also tick this many (e.g. 100000)")
    parser.add_argument(
        "--big-first",
        action="store_true",
        help="the --big instances as new (their first tick, then a steady one), not as running",
    )
    parser.add_argument("--profile", type=Path, help="cProfile one steady tick into this file")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve-simulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator is not None:
        serve_simulator(args.serve_simulator, args.instances)
        return
    configure_logging(json=True, level="WARNING")  # per-call lines are DEBUG, as in production
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zg-tick-bench-") as tmp:
        work = Path(tmp)
        simulator, root = start_simulator(work, max(args.instances, args.big))
        postgres = postgres_for_tests(work / "pg", use_docker=False)
        name = f"zg_bench_{uuid.uuid4().hex[:8]}"
        postgres.create_database(name)
        try:
            url = postgres.url(name)
            migrate(url, SPEC)
            figures = asyncio.run(run(args, url, root + "/v1"))
            figures["wall_s"] = time.perf_counter() - started
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
        finally:
            postgres.drop_database(name)
            postgres.close()
            simulator.stop()
            sys.stdout.flush()


if __name__ == "__main__":
    main()
