"""Benchmark: sends through the real sender process next to bare httpx and aiohttp loops.

    PYTHONPATH=. .venv/bin/python services/sender/bench/sender_bench.py [--instances 500]

Starts a real nats-server, an embedded PostgreSQL (health's `instances` seeded with
`--instances` connected instances with a phone, default 500, written directly: a benchmark
fixture), the W-API simulator (its own process) and `zapgate-sender run` (its own process) with
`MIN_SEND_GAP=0`, so the per-instance pacing does not cap throughput. Each round sends a fixed
count of text commands through the sender, spread over every instance in turn (at most
`--in-flight` awaiting an outcome, default one per instance; latency = command published to
outcome seen), and the same count from two bare loops calling the simulator's send-text with
one worker per instance: one aiohttp session (the ceiling: what the machine can do) and one
httpx client (its pool is its limit). Sides interleaved, the order rotating each round; medians
of the rounds. Per-instance order is checked on the sender's side: each instance's texts, as
the simulator received them, must come in the order the commands were published. The load
average is recorded before and after the run (the machine is shared).
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.procs import infra, start_sender, start_simulator
from bench.profile import SampledProfile, cpu_seconds, profile_lines
from bench.profile import summarise as summarise_profile
from bench.sends import (
    DESTINATION,
    BenchInstance,
    SendDriver,
    bench_instances,
    connect,
    order_violations,
    seed_instances,
)
from bench.stats import median, percentile, ratio

WARMUP = 200


async def bare_loop(base_url: str, items: list[BenchInstance], count: int) -> dict[str, Any]:
    """`count` send-text calls straight to the simulator, one worker per instance."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=len(items), max_keepalive_connections=len(items))
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker(item: BenchInstance, share: int) -> None:
            nonlocal failures
            for n in range(share):
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        f"{base_url}/message/send-text",
                        params={"instanceId": item.instance_id},
                        headers={"Authorization": f"Bearer {item.token}"},
                        json={"phone": DESTINATION, "message": f"Mensagem de teste {n}"},
                    )
                except httpx.HTTPError:
                    failures += 1  # counted, not fatal: the figure is calls that succeeded
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                failures += 0 if answer.is_success else 1

        size, extra = divmod(count, len(items))
        shares = [size + (1 if i < extra else 0) for i in range(len(items))]
        started = time.perf_counter()
        await asyncio.gather(*(worker(item, n) for item, n in zip(items, shares, strict=True)))
        elapsed = time.perf_counter() - started
    ok = count - failures
    return _figures(count, ok, elapsed, latencies, {"ok": ok, "failed": failures})


async def bare_aiohttp_loop(
    base_url: str, items: list[BenchInstance], count: int
) -> dict[str, Any]:
    """The same calls as `bare_loop` through one aiohttp `ClientSession`: the machine's ceiling
    for provider calls (httpx's pool is the limit of the httpx loop, PERFORMANCE.md)."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=len(items))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(item: BenchInstance, share: int) -> None:
            nonlocal failures
            for n in range(share):
                started = time.perf_counter()
                try:
                    async with session.post(
                        f"{base_url}/message/send-text",
                        params={"instanceId": item.instance_id},
                        headers={"Authorization": f"Bearer {item.token}"},
                        json={"phone": DESTINATION, "message": f"Mensagem de teste {n}"},
                    ) as answer:
                        await answer.read()
                except aiohttp.ClientError:
                    failures += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                failures += 0 if answer.ok else 1

        size, extra = divmod(count, len(items))
        shares = [size + (1 if i < extra else 0) for i in range(len(items))]
        started = time.perf_counter()
        await asyncio.gather(*(worker(item, n) for item, n in zip(items, shares, strict=True)))
        elapsed = time.perf_counter() - started
    ok = count - failures
    return _figures(count, ok, elapsed, latencies, {"ok": ok, "failed": failures})


async def provider_calls(base_url: str) -> list[tuple[str, str]]:
    """(instance, text) of every send-text the simulator received, in arrival order; then
    forgets them (its `/_sim` control API), so each round reads only its own."""
    root = base_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=60.0) as client:
        answer = await client.get(f"{root}/_sim/calls", params={"operation": "send-text"})
        answer.raise_for_status()
        await client.delete(f"{root}/_sim/records")
    calls = sorted(answer.json(), key=lambda call: call["at"])
    return [
        (call["instance_id"], call["body"]["message"])
        for call in calls
        if isinstance(call.get("body"), dict) and "message" in call["body"]
    ]


def _figures(
    count: int, ok: int, elapsed: float, latencies: list[float], statuses: dict[str, int]
) -> dict[str, Any]:
    return {
        "count": count,
        "ok": ok,
        "elapsed": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": statuses,
    }


async def measure(  # noqa: PLR0913 - the knobs of one benchmark run, read from the CLI
    nats_url: str,
    base_url: str,
    items: list[BenchInstance],
    *,
    sends: int,
    rounds: int,
    in_flight: int,
    sender_pid: int,
    profile: Path | None,
) -> dict[str, list[dict[str, Any]]]:
    nc = await connect(nats_url)
    driver = SendDriver(nc, items)
    await driver.start()
    sides = ["sender", "bare", "bare_aiohttp"]
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    sampler = None
    try:
        await driver.closed_loop(WARMUP, in_flight)
        await bare_loop(base_url, items, WARMUP)
        await bare_aiohttp_loop(base_url, items, WARMUP)
        if profile is not None:
            # Idle samples are left out: what it records is the sender's CPU, nearly all of it
            # in its own rounds (it waits for work during the bare loops).
            sampler = SampledProfile(sender_pid, profile)
        for index in range(rounds):
            order = sides[index % len(sides) :] + sides[: index % len(sides)]
            for name in order:
                if name == "sender":
                    driver.tag, driver.published = f"bench r{index}", []
                    cpu_before = cpu_seconds(sender_pid)
                    run = await driver.closed_loop(sends, in_flight)
                    cpu = cpu_seconds(sender_pid) - cpu_before
                    ok = run.statuses.get("sent", 0)
                    figures = _figures(sends, ok, run.elapsed, run.latencies_ms, dict(run.statuses))
                    figures["cpu_ms_per_send"] = cpu * 1000 / sends
                    figures["order_violations"] = order_violations(
                        driver.published, await provider_calls(base_url)
                    )
                elif name == "bare":
                    figures = await bare_loop(base_url, items, sends)
                else:
                    figures = await bare_aiohttp_loop(base_url, items, sends)
                results[name].append(figures)
                cpu_note = (
                    f", sender CPU {figures['cpu_ms_per_send']:.2f} ms/send"
                    if "cpu_ms_per_send" in figures
                    else ""
                )
                sys.stdout.write(
                    f"round {index + 1} {name}: {figures['rps']:.0f} sends/s, "
                    f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                    f"{figures['statuses']}{cpu_note}\n"
                )
    finally:
        if sampler is not None:
            sampler.stop()
        await nc.close()
    if sampler is not None and sampler.error is not None:
        results["profile_error"] = [{"error": sampler.error}]
    return results


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [r["cpu_ms_per_send"] for r in rounds if "cpu_ms_per_send" in r]
    return {
        "rounds": rounds,
        "rps": median([r["rps"] for r in rounds]),
        **({"cpu_ms_per_send": median(cpu)} if cpu else {}),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
    }


def bench(  # noqa: PLR0913 - the knobs of one benchmark run, read from the CLI
    sends: int,
    rounds: int,
    instance_count: int,
    in_flight: int,
    workdir: Path,
    *,
    profile: bool,
) -> dict[str, Any]:
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    items = bench_instances(instance_count)
    load_before = os.getloadavg()
    with infra(workdir) as servers:
        asyncio.run(seed_instances(servers.database_url, items))
        simulator, sim_url = start_simulator(
            log_dir, [(i.instance_id, i.token, i.phone) for i in items]
        )
        try:
            sender = start_sender(servers, log_dir, wapi_base_url=sim_url + "/v1")
            try:
                results = asyncio.run(
                    measure(
                        servers.nats_url,
                        sim_url + "/v1",
                        items,
                        sends=sends,
                        rounds=rounds,
                        in_flight=in_flight,
                        sender_pid=sender.pid,
                        profile=workdir / "sender-profile.txt" if profile else None,
                    )
                )
                if profile:
                    profile_report = _profile_report(workdir / "sender-profile.txt", results)
            finally:
                sender.stop()
        finally:
            simulator.stop()
    load_after = os.getloadavg()
    sender_summary, bare_summary = summarise(results["sender"]), summarise(results["bare"])
    aiohttp_summary = summarise(results["bare_aiohttp"])
    return {
        "sends_per_round": sends,
        "rounds": rounds,
        "instances": instance_count,
        "in_flight": in_flight,
        "min_send_gap": "0 s (throughput run)",
        "sender": sender_summary,
        "bare": bare_summary,
        "ratio": ratio(sender_summary["rps"], bare_summary["rps"]),
        "bare_aiohttp": aiohttp_summary,
        "ratio_aiohttp": ratio(sender_summary["rps"], aiohttp_summary["rps"]),
        "order_violations": sum(r.get("order_violations", 0) for r in results["sender"]),
        **({"profile": profile_report} if profile else {}),
        **({"batches": batches} if (batches := _batches(log_dir / "sender.log")) else {}),
        "load_average": {
            "before": [round(value, 2) for value in load_before],
            "after": [round(value, 2) for value in load_after],
        },
    }


def _batches(log: Path) -> dict[str, Any]:
    """The sender's `sender_batches` line (written at stop): statements and items per kind."""
    found: dict[str, Any] = {}
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if '"sender_batches"' in line:
                with contextlib.suppress(ValueError):
                    found = json.loads(line)
    return {
        name: value
        for name, value in found.items()
        if isinstance(value, dict) and value.get("batches")
    }


def _profile_report(path: Path, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    if "profile_error" in results:
        return [f"not taken: {results['profile_error'][0]['error']}"]
    lines = profile_lines(summarise_profile(path))
    return lines or ["not taken: no samples"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=2000, help="sends per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument(
        "--in-flight", type=int, help="commands awaiting outcome (default: one per instance)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not sample the sender with py-spy"
    )
    parser.add_argument("--keep-profile", type=Path, help="copy py-spy's raw stacks here")
    parser.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zg-sender-bench-") as tmp:
        in_flight = args.in_flight or args.instances
        figures = bench(
            args.sends,
            args.rounds,
            args.instances,
            in_flight,
            Path(tmp),
            profile=not args.no_profile,
        )
        if args.keep_logs:
            shutil.copytree(Path(tmp) / "logs", args.keep_logs, dirs_exist_ok=True)
        raw = Path(tmp) / "sender-profile.txt"
        if args.keep_profile and raw.exists():
            shutil.copyfile(raw, args.keep_profile)
    sys.stdout.write(
        f"median sender {figures['sender']['rps']:.0f}/s p99 {figures['sender']['p99_ms']:.1f} ms;"
        f" bare httpx {figures['bare']['rps']:.0f}/s p99 {figures['bare']['p99_ms']:.1f} ms;"
        f" sender CPU {figures['sender'].get('cpu_ms_per_send', 0):.2f} ms/send;"
        f" bare aiohttp {figures['bare_aiohttp']['rps']:.0f}/s;"
        f" ratio {figures['ratio']:.2f} of httpx, {figures['ratio_aiohttp']:.2f} of aiohttp;"
        f" order violations {figures['order_violations']};"
        f" load average {figures['load_average']}\n"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
