"""`task soak`: a bounded soak at a steady webhook and send rate over the real processes.

    python -m bench.soak [--minutes 10] [--webhook-rate 100] [--send-rate 20]

Starts nats-server, PostgreSQL, the simulator, `zapgate-ingest run` and `zapgate-sender run`
(min gap 0), then for each window (30 s) posts webhooks at a steady rate from the load generator
process and sends commands at a steady rate, and samples each service's RSS. At the end it
counts: webhooks accepted vs events in `ZG_WEBHOOKS` vs rows archived in `webhook_payloads`,
and sends published vs outcomes seen. The figures go into docs/benchmarks.md (soak section).
"""

from __future__ import annotations

# ruff: noqa: E501 - the report prose reads better as whole sentences than as wrapped fragments
import argparse
import asyncio
import json
import random
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.procs import BENCH_SECRET, ROOT, infra, start_ingest, start_sender, start_simulator
from bench.run import SOAK_MARKER
from bench.sends import SendDriver, SendRun, bench_instances, connect, seed_instances
from bench.stats import percentile
from bench.webhooks import webhook_bodies
from zapgate.contracts import subjects
from zapgate.devservers.postgres import free_port
from zapgate.runtime.db import create_engine

WINDOW_S = 30.0
SETTLE_S = 30.0


async def paced_sends(driver: SendDriver, rate: float, seconds: float, run: SendRun) -> None:
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    index = 0
    while time.perf_counter() - started < seconds:
        tasks.append(asyncio.create_task(driver.send_one(index, run)))
        index += 1
        await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))  # pacing
    await asyncio.gather(*tasks)


async def count_rows(database_url: str) -> int:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(sa.text("SELECT count(*) FROM webhook_payloads"))).scalar_one()
            )
    finally:
        await engine.dispose()


async def stream_count(nats_url: str) -> int:
    nc = await connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info(subjects.STREAM_WEBHOOKS)).state.messages)
    finally:
        await nc.close()


async def window(  # noqa: PLR0913, PLR0917 - one window's knobs, all needed
    url: str,
    bodies: list[bytes],
    workdir: Path,
    rate: float,
    nats_url: str,
    driver_args: tuple[list[Any], float, SendRun],
) -> dict[str, Any]:
    """Webhooks from the load generator process and sends from here, at the same time."""
    bodies_path, out_path = workdir / "soak-bodies.jsonl", workdir / "soak-result.json"
    bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
    load = await asyncio.create_subprocess_exec(
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
        "16",
        "--rate",
        str(rate),
        cwd=ROOT,
    )
    items, send_rate, run = driver_args
    nc = await connect(nats_url)
    try:
        driver = SendDriver(nc, items)
        await driver.start()
        await paced_sends(driver, send_rate, WINDOW_S, run)
    finally:
        await nc.close()
    await load.wait()
    result: dict[str, Any] = json.loads(out_path.read_text())
    result["ok"] = int(result["statuses"].get("200", 0))
    return result


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(7)  # noqa: S311 - a reproducible mix
    log_dir = workdir / "logs"
    log_dir.mkdir()
    items = bench_instances(50)
    samples: list[dict[str, float]] = []
    webhook_latencies: list[float] = []
    accepted = 0
    send_run = SendRun()
    with infra(workdir) as servers:
        asyncio.run(seed_instances(servers.database_url, items))
        simulator, sim_url = start_simulator(
            log_dir, [(i.instance_id, i.token, i.phone) for i in items]
        )
        ingest = start_ingest(servers, log_dir, http_port=free_port())
        sender = start_sender(servers, log_dir, wapi_base_url=sim_url + "/v1")
        services = {"ingest": ingest, "sender": sender}
        url = f"http://127.0.0.1:{ingest.env['ZAPGATE_INGEST_HTTP_PORT']}/webhooks/{BENCH_SECRET}"
        windows = max(1, round(args.minutes * 60 / WINDOW_S))
        try:
            started = time.monotonic()

            for number in range(windows):
                bodies = webhook_bodies(round(args.webhook_rate * WINDOW_S), rng)
                result = asyncio.run(
                    window(
                        url,
                        bodies,
                        workdir,
                        args.webhook_rate,
                        servers.nats_url,
                        (items, args.send_rate, send_run),
                    )
                )
                accepted += result["ok"]
                webhook_latencies += result["latencies_ms"]
                sample = {"t_s": time.monotonic() - started}
                sample |= {name: proc.rss_mib() for name, proc in services.items()}
                samples.append(sample)
                sys.stdout.write(f"window {number + 1}/{windows}: {sample}\n")
                sys.stdout.flush()
            # Let the archiver and the last outcomes catch up before counting.
            deadline = time.monotonic() + SETTLE_S
            rows = asyncio.run(count_rows(servers.database_url))
            while rows < accepted and time.monotonic() < deadline:
                time.sleep(1.0)  # polling a table from a script
                rows = asyncio.run(count_rows(servers.database_url))
            events = asyncio.run(stream_count(servers.nats_url))
        finally:
            sender.stop()
            ingest.stop()
            simulator.stop()
    return {
        "minutes": args.minutes,
        "webhook_rate": args.webhook_rate,
        "send_rate": args.send_rate,
        "accepted": accepted,
        "events": events,
        "rows": rows,
        "webhook_p50_ms": percentile(webhook_latencies, 0.5),
        "webhook_p99_ms": percentile(webhook_latencies, 0.99),
        "sends": send_run.published,
        "outcomes": dict(send_run.statuses),
        "send_p50_ms": percentile(send_run.latencies_ms, 0.5),
        "send_p99_ms": percentile(send_run.latencies_ms, 0.99),
        "rss": samples,
    }


def render(figures: dict[str, Any]) -> str:
    rss = figures["rss"]
    lines = [
        SOAK_MARKER,
        "",
        f"## Soak ({figures['minutes']} min, {figures.get('note', 'bench/soak.py')})",
        "",
        f"- date: {figures.get('date', 'unknown')}",
        f"- command: `{figures.get('command', 'python -m bench.soak')}`",
        "",
        (
            f"Steady {figures['webhook_rate']:.0f} webhooks/s and {figures['send_rate']:.0f} sends/s "
            "over the real ingest and sender processes (simulator in its own process)."
        ),
        "",
        (
            f"- webhooks accepted {figures['accepted']}, events in `ZG_WEBHOOKS` {figures['events']}, "
            f"rows archived {figures['rows']}: lost {figures['accepted'] - figures['rows']}"
        ),
        (
            f"- webhook latency p50 {figures['webhook_p50_ms']:.1f} ms, p99 "
            f"{figures['webhook_p99_ms']:.1f} ms"
        ),
        (
            f"- sends published {figures['sends']}, outcomes {figures['outcomes']}; latency p50 "
            f"{figures['send_p50_ms']:.1f} ms, p99 {figures['send_p99_ms']:.1f} ms"
        ),
        "",
        memory_growth(rss),
        "",
        "| t (s) | ingest RSS MiB | sender RSS MiB |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {s['t_s']:.0f} | {s['ingest']:.1f} | {s['sender']:.1f} |" for s in rss]
    return "\n".join(lines) + "\n"


def memory_growth(rss: list[dict[str, float]]) -> str:
    """RSS change from the first window (warm) to the last one, per service."""
    if len(rss) < 2:  # noqa: PLR2004 - a change needs two samples
        return "- memory: too short a run to compare windows"
    first, last = rss[0], rss[-1]
    parts = [
        f"{name} {last[name] - first[name]:+.1f} MiB ({first[name]:.1f} to {last[name]:.1f})"
        for name in ("ingest", "sender")
    ]
    return f"- RSS from the first window to the last: {', '.join(parts)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--webhook-rate", type=float, default=100.0)
    parser.add_argument("--send-rate", type=float, default=20.0)
    parser.add_argument("--note", default="on-demand run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zg-soak-") as tmp:
        figures = soak(args, Path(tmp))
    figures["note"] = args.note
    figures["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["command"] = shlex.join(
        ["./taskw", "soak", *(["--", *sys.argv[1:]] if sys.argv[1:] else [])]
    )
    section = render(figures)
    text = args.out.read_text() if args.out.exists() else ""
    if SOAK_MARKER in text:
        text = text[: text.index(SOAK_MARKER)]
    args.out.write_text(text.rstrip() + "\n\n" + section)
    sys.stdout.write(section)


if __name__ == "__main__":
    main()
