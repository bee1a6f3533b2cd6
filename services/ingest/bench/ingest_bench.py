"""Benchmark: the ingest gateway next to a bare Starlette + JetStream app, same run, same load.

    PYTHONPATH=. .venv/bin/python services/ingest/bench/ingest_bench.py --requests 10000

Starts a real nats-server and an embedded PostgreSQL, the gateway as `zapgate-ingest run` (its
own process: uvicorn with uvloop + httptools, archiver on, production defaults incl. the
access log) and the bare app (`bare_gateway.py`, its own process). Each round sends a fixed
count of realistic webhook bodies (the simulator's payload builders) to each, interleaved, from a
load generator in a third process over 64 keep-alive connections. Prints webhooks/s and p50/p99
per round and the medians, and checks `ZG_WEBHOOKS` holds exactly one event per accepted
webhook. `--json PATH` writes the figures for `bench/run.py`.
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nats

from bench.procs import BENCH_SECRET, ROOT, ServiceProcess, infra, start_ingest
from bench.stats import median, percentile, ratio
from bench.webhooks import webhook_bodies
from zapgate.contracts import subjects
from zapgate.devservers.postgres import free_port

WARMUP = 500


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


async def stream_messages(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "rps": median([r["rps"] for r in rounds]),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
        "ok": sum(r["ok"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }


def bench(requests: int, rounds: int, connections: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(20251001)  # noqa: S311 - a reproducible mix, not security
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
                    outcome = run_load(targets[name], bodies, workdir, connections)
                    results[name].append(outcome)
                    sys.stdout.write(
                        f"round {index + 1} {name}: {outcome['rps']:.0f} webhooks/s, "
                        f"p50 {outcome['p50_ms']:.1f} ms, p99 {outcome['p99_ms']:.1f} ms, "
                        f"{outcome['ok']}/{outcome['requests']} ok\n"
                    )
            accepted += sum(r["ok"] for r in results["ingest"])
            stored = asyncio.run(stream_messages(servers.nats_url, subjects.STREAM_WEBHOOKS))
        finally:
            bare.stop()
            ingest.stop()
    ingest_summary, bare_summary = summarise(results["ingest"]), summarise(results["bare"])
    return {
        "requests_per_round": requests,
        "rounds": rounds,
        "connections": connections,
        "ingest": ingest_summary,
        "bare": bare_summary,
        "ratio": ratio(ingest_summary["rps"], bare_summary["rps"]),
        "accepted": accepted,
        "stream_messages": stored,
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
