"""Benchmark: the ingest gateway next to a bare Starlette + JetStream app, same run, same load.

    PYTHONPATH=. .venv/bin/python services/ingest/bench/ingest_bench.py --requests 10000

Starts a real nats-server and an embedded PostgreSQL, the gateway as `zapgate-ingest run` (its
own process: uvicorn with uvloop + httptools, archiver on, production defaults incl. the
access log) and the bare app (`bare_gateway.py`, its own process). Each round sends a fixed
count of realistic webhook bodies (the simulator's payload builders) to each, interleaved, from a
load generator in a third process over 64 keep-alive connections. Prints webhooks/s and p50/p99
per round and the medians, the CPU each process spent per webhook in each side's rounds
(gateway, its archiver child, the bare app, nats-server), and checks `ZG_WEBHOOKS` holds exactly
one event per accepted webhook. `--json PATH` writes the figures for `bench/run.py`.
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from bench.procs import (
    BENCH_SECRET,
    READY_TIMEOUT,
    ROOT,
    ServiceProcess,
    infra,
    start_ingest,
)
from bench.stats import median, percentile, ratio
from bench.webhooks import webhook_bodies
from zapgate.contracts import subjects
from zapgate.devservers.postgres import free_port

WARMUP = 500


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (Linux `/proc`); 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def archiver_pid(ingest: ServiceProcess) -> int | None:
    """The pid of ingest's archiver child (its last `archiver_process_started` line)."""
    pid = None
    for line in ingest.log_path.read_text(errors="replace").splitlines():
        if '"archiver_process_started"' in line:
            with contextlib.suppress(ValueError, KeyError):
                pid = int(json.loads(line)["pid"])
    return pid


def wait_archiver(ingest: ServiceProcess) -> None:
    """Wait for the archiver child's `archiver_started`: its imports take seconds of CPU on a
    busy machine, which must not fall into the first round."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if '"archiver_started"' in ingest.log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)  # a separate process: its log is the only sign
    raise RuntimeError(f"ingest's archiver did not start:\n{ingest.log_tail()}")


def run_load(url: str, bodies: list[bytes], workdir: Path, connections: int) -> dict[str, Any]:
    """One load run from a separate process (the generator must not share our interpreter)."""
    bodies_path, out_path = workdir / "bodies.jsonl", workdir / "result.json"
    bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--bodies",
            str(bodies_path),
            "--out",
            str(out_path),
            "--connections",
            str(connections),
        ],
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out_path.read_text())
    latencies: list[float] = result.pop("latencies_ms")
    ok = int(result["statuses"].get("200", 0))
    result |= {
        "requests": len(bodies),
        "ok": ok,
        "rps": ok / result["elapsed"] if result["elapsed"] else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }
    return result


async def wait_archived(database_url: str, count: int, timeout: float) -> tuple[int, float]:
    """Rows in `webhook_payloads` once they reach `count` (or at `timeout`), and the seconds it
    took: the archiver catching up after the last round."""
    import sqlalchemy as sa  # noqa: PLC0415 - only this check reads the database

    from zapgate.runtime.db import create_engine  # noqa: PLC0415

    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    started = time.monotonic()
    try:
        while True:
            async with engine.connect() as conn:
                rows = int((await conn.execute(sa.text(QUERY_ARCHIVED))).scalar_one())
            if rows >= count or time.monotonic() - started > timeout:
                return rows, round(time.monotonic() - started, 1)
            await asyncio.sleep(0.5)  # another process's progress, seen only in the table
    finally:
        await engine.dispose()


QUERY_ARCHIVED = "SELECT count(*) FROM webhook_payloads"


async def stream_messages(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    processes = rounds[0].get("cpu_ms_per_webhook", {})
    return {
        "cpu_ms_per_webhook": {
            process: median([r["cpu_ms_per_webhook"][process] for r in rounds])
            for process in processes
        },
        "rounds": rounds,
        "rps": median([r["rps"] for r in rounds]),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
        "ok": sum(r["ok"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }


def bench(requests: int, rounds: int, connections: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(20251001)  # noqa: S311 - a reproducible mix, not security
    load_before = [round(x, 2) for x in os.getloadavg()]
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with infra(workdir) as servers:
        ingest = start_ingest(servers, log_dir, http_port=free_port())
        bare_port = free_port()
        bare = ServiceProcess(
            "bare-gateway",
            [
                sys.executable,
                str(Path(__file__).with_name("bare_gateway.py")),
                "--port",
                str(bare_port),
                "--nats-url",
                servers.nats_url,
            ],
            log_dir,
        ).start()
        try:
            bare.wait_ready(f"http://127.0.0.1:{bare_port}/", any_status=True)
            wait_archiver(ingest)
            targets = {
                "ingest": f"{_ingest_url(ingest)}/webhooks/{BENCH_SECRET}",
                "bare": f"http://127.0.0.1:{bare_port}/webhooks/bench",
            }
            accepted = 0
            for name, url in targets.items():
                warm = run_load(url, webhook_bodies(WARMUP, rng), workdir, connections)
                accepted += warm["ok"] if name == "ingest" else 0
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for index in range(rounds):
                # Alternate who goes first so neither always runs on a warmer (or noisier) box.
                order = list(targets) if index % 2 == 0 else list(reversed(targets))
                for name in order:
                    bodies = webhook_bodies(requests, rng)
                    pids = {
                        "gateway": ingest.pid,
                        "archiver": archiver_pid(ingest),
                        "bare": bare.pid,
                        "nats-server": servers.nats.pid,
                    }
                    before = {process: cpu_seconds(pid) for process, pid in pids.items()}
                    outcome = run_load(targets[name], bodies, workdir, connections)
                    # CPU of each process during this side's round, per webhook it answered: the
                    # archiver also works through the other side's rounds (catching up).
                    outcome["cpu_ms_per_webhook"] = {
                        process: round(1000 * (cpu_seconds(pid) - before[process]) / requests, 3)
                        for process, pid in pids.items()
                    }
                    outcome["load_average"] = [round(x, 2) for x in os.getloadavg()]
                    results[name].append(outcome)
                    sys.stdout.write(
                        f"round {index + 1} {name}: {outcome['rps']:.0f} webhooks/s, "
                        f"p50 {outcome['p50_ms']:.1f} ms, p99 {outcome['p99_ms']:.1f} ms, "
                        f"{outcome['ok']}/{outcome['requests']} ok\n"
                    )
            accepted += sum(r["ok"] for r in results["ingest"])
            stored = asyncio.run(stream_messages(servers.nats_url, subjects.STREAM_WEBHOOKS))
            archived, catch_up = asyncio.run(wait_archived(servers.database_url, stored, 300.0))
        finally:
            bare.stop()
            ingest.stop()
    ingest_summary, bare_summary = summarise(results["ingest"]), summarise(results["bare"])
    return {
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "requests_per_round": requests,
        "rounds": rounds,
        "connections": connections,
        "ingest": ingest_summary,
        "bare": bare_summary,
        "ratio": ratio(ingest_summary["rps"], bare_summary["rps"]),
        "accepted": accepted,
        "stream_messages": stored,
        "archived": archived,
        "archive_catch_up_s": catch_up,
        "one_event_per_webhook": stored == accepted,
    }


def _ingest_url(process: ServiceProcess) -> str:
    port = process.env["ZAPGATE_INGEST_HTTP_PORT"]
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="webhooks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zg-ingest-bench-") as tmp:
        figures = bench(args.requests, args.rounds, args.connections, Path(tmp))
    sys.stdout.write(
        f"median ingest {figures['ingest']['rps']:.0f}/s p99 {figures['ingest']['p99_ms']:.1f} ms;"
        f" bare {figures['bare']['rps']:.0f}/s p99 {figures['bare']['p99_ms']:.1f} ms;"
        f" ratio {figures['ratio']:.2f}; stream {figures['stream_messages']} events for"
        f" {figures['accepted']} accepted webhooks\n"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
