"""Benchmark: HTTP send-to-outcome through `zapgate-api` next to the NATS path, same run.

    PYTHONPATH=. .venv/bin/python services/api/bench/api_bench.py --sends 1000

Starts a real nats-server, an embedded PostgreSQL (health's `instances` seeded with connected
instances, written directly: a benchmark fixture), the W-API simulator, `zapgate-sender run` and
`zapgate-api run` (each its own process). Each round sends a fixed count of text messages twice,
interleaved: over NATS (a command published to ZG_SEND, latency until its outcome is seen) and
over HTTP (`POST /v1/instances/{id}/messages/text?wait=30` with a fresh Idempotency-Key, latency
until the answer with the decision). At most `--in-flight` of each at once. Medians of rounds.
Nothing asserts: the figures are the result (on demand, not in CI).
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
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from pwdlib import PasswordHash

from bench.procs import BIN, ServiceProcess, infra, start_sender, start_simulator
from bench.sends import DESTINATION, SendDriver, bench_instances, connect, seed_instances
from bench.stats import median, percentile, ratio
from zapgate.api.adapters.db import PostgresKeyStore
from zapgate.api.service import Authenticator
from zapgate.devservers.postgres import free_port
from zapgate.runtime.clock import SystemClock
from zapgate.runtime.db import create_engine

WARMUP = 100


async def make_key(database_url: str) -> str:
    engine = create_engine(database_url, pool_size=1)
    try:
        auth = Authenticator(
            PostgresKeyStore(engine), PasswordHash.recommended(), SystemClock(), cache_ttl=0
        )
        return (await auth.create_key("bench", ["*"])).token
    finally:
        await engine.dispose()


def start_api(servers: Any, log_dir: Path, http_port: int) -> ServiceProcess:  # noqa: ANN401
    prefix = "ZAPGATE_API_"
    probe_port = free_port()
    env = {
        f"{prefix}ENVIRONMENT": "dev",
        f"{prefix}NATS_URL": servers.nats_url,
        f"{prefix}DATABASE_URL": servers.database_url,
        f"{prefix}PROBE_HOST": "127.0.0.1",
        f"{prefix}PROBE_PORT": str(probe_port),
        f"{prefix}HTTP_HOST": "127.0.0.1",
        f"{prefix}HTTP_PORT": str(http_port),
        f"{prefix}LOG_JSON": "true",
        f"{prefix}RATE_LIMIT_REQUESTS": "100000",
    }
    process = ServiceProcess("api", [str(BIN / "zapgate-api"), "run"], log_dir, env)
    process.start().wait_ready(f"http://127.0.0.1:{probe_port}/readyz")
    return process


def _figures(
    count: int, elapsed: float, latencies: list[float], statuses: Counter[str]
) -> dict[str, Any]:
    ok = statuses.get("sent", 0)
    return {
        "count": count,
        "ok": ok,
        "elapsed": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": dict(statuses),
    }


async def http_loop(
    client: httpx.AsyncClient, token: str, instances: list[str], count: int, in_flight: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            instance = instances[index % len(instances)]
            started = time.perf_counter()
            answer = await client.post(
                f"/v1/instances/{instance}/messages/text",
                params={"wait": 30},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
                json={"phone": DESTINATION, "message": f"Mensagem de teste {index}"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[answer.json().get("status", str(answer.status_code))] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return _figures(count, time.perf_counter() - started, latencies, statuses)


async def measure(  # noqa: PLR0913 - the knobs of one run
    nats_url: str,
    api_url: str,
    token: str,
    instances: list[Any],
    *,
    sends: int,
    rounds: int,
    in_flight: int,
) -> dict[str, list[dict[str, Any]]]:
    nc = await connect(nats_url)
    driver = SendDriver(nc, instances)
    await driver.start()
    ids = [item.instance_id for item in instances]
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    results: dict[str, list[dict[str, Any]]] = {"http": [], "nats": []}
    try:
        async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=60) as client:
            await driver.closed_loop(WARMUP, in_flight)
            await http_loop(client, token, ids, WARMUP, in_flight)
            for index in range(rounds):
                order = ["http", "nats"] if index % 2 == 0 else ["nats", "http"]
                for name in order:
                    if name == "nats":
                        run = await driver.closed_loop(sends, in_flight)
                        figures = _figures(sends, run.elapsed, run.latencies_ms, run.statuses)
                    else:
                        figures = await http_loop(client, token, ids, sends, in_flight)
                    results[name].append(figures)
                    sys.stdout.write(
                        f"round {index + 1} {name}: {figures['rps']:.0f} sends/s, "
                        f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                        f"{figures['statuses']}\n"
                    )
    finally:
        await nc.close()
    return results


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "rps": median([r["rps"] for r in rounds]),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
    }


def bench(sends: int, rounds: int, count: int, in_flight: int, workdir: Path) -> dict[str, Any]:
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    items = bench_instances(count)
    with infra(workdir) as servers:
        asyncio.run(seed_instances(servers.database_url, items))
        token = asyncio.run(make_key(servers.database_url))
        simulator, sim_url = start_simulator(
            log_dir, [(i.instance_id, i.token, i.phone) for i in items]
        )
        try:
            sender = start_sender(servers, log_dir, wapi_base_url=sim_url + "/v1")
            try:
                api_port = free_port()
                api = start_api(servers, log_dir, api_port)
                try:
                    results = asyncio.run(
                        measure(
                            servers.nats_url,
                            f"http://127.0.0.1:{api_port}",
                            token,
                            items,
                            sends=sends,
                            rounds=rounds,
                            in_flight=in_flight,
                        )
                    )
                finally:
                    api.stop()
            finally:
                sender.stop()
        finally:
            simulator.stop()
    http, over_nats = summarise(results["http"]), summarise(results["nats"])
    return {
        "sends_per_round": sends,
        "rounds": rounds,
        "instances": count,
        "in_flight": in_flight,
        "http": http,
        "nats": over_nats,
        "ratio": ratio(http["rps"], over_nats["rps"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=1000, help="sends per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=100, help="sends awaiting outcome")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zg-api-bench-") as tmp:
        figures = bench(args.sends, args.rounds, args.instances, args.in_flight, Path(tmp))
    sys.stdout.write(
        f"median HTTP {figures['http']['rps']:.0f}/s p99 {figures['http']['p99_ms']:.1f} ms;"
        f" NATS {figures['nats']['rps']:.0f}/s p99 {figures['nats']['p99_ms']:.1f} ms;"
        f" ratio {figures['ratio']:.2f}\n"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
