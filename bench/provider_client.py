"""Benchmark: the W-API adapter next to bare HTTP client loops, in the same run.

    PYTHONPATH=. .venv/bin/python -m bench.provider_client [--rounds 3] [--calls 2000]

Starts the W-API simulator in its own process (`zapgate-wapi-sim`, 50 instances) and, in this
process, makes `--calls` send-text calls per side and round with `--workers` concurrent workers
(one per instance): through `WapiClient` (the adapter every service uses), and through three
bare loops that only call and read the answer: aiohttp's `ClientSession` (the ceiling), httpx
over `httpx_aiohttp.AiohttpTransport`, and plain httpx. Sides are interleaved (the order rotates
each round) and the report gives medians of the rounds; `--json PATH` writes them for
`bench/run.py`. Nothing here asserts: the figures are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import SecretStr

from bench.procs import start_simulator
from bench.stats import median, percentile, ratio
from zapgate.runtime.logging import configure_logging
from zapgate.wapi import InstanceCredentials, WapiClient, WapiLimits, is_failure

DESTINATION = "5511999990000"
SIDES = ("wapi_client", "bare_aiohttp", "httpx_aiohttp", "bare_httpx")
Call = Callable[[InstanceCredentials, int], Awaitable[bool]]


async def run_side(call: Call, items: list[InstanceCredentials], count: int) -> dict[str, Any]:
    """`count` calls over `len(items)` workers (one instance each); calls/s and latencies."""
    latencies: list[float] = []
    failures = 0
    share, extra = divmod(count, len(items))

    async def worker(index: int, credentials: InstanceCredentials) -> None:
        nonlocal failures
        for n in range(share + (1 if index < extra else 0)):
            started = time.perf_counter()
            ok = await call(credentials, n)
            latencies.append((time.perf_counter() - started) * 1000)
            failures += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, item) for i, item in enumerate(items)))
    elapsed = time.perf_counter() - started
    return {
        "calls": count,
        "seconds": elapsed,
        "rps": count / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "failures": failures,
    }


def _request(
    credentials: InstanceCredentials, n: int
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    params = {"instanceId": credentials.instance_id}
    headers = {"Authorization": f"Bearer {credentials.token.get_secret_value()}"}
    body = {"phone": DESTINATION, "message": f"Mensagem de teste {n}"}
    return params, headers, body


async def bench(
    base_url: str, items: list[InstanceCredentials], rounds: int, calls: int
) -> dict[str, Any]:
    workers = len(items)
    url = base_url + "/message/send-text"
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with (
        WapiClient(
            base_url=base_url, limits=WapiLimits(total=workers, per_instance=workers)
        ) as wapi,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session,
        httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits), limits=limits, timeout=30.0
        ) as over_aiohttp,
        httpx.AsyncClient(limits=limits, timeout=30.0) as plain,
    ):

        async def via_wapi(credentials: InstanceCredentials, n: int) -> bool:
            result = await wapi.send_text(credentials, DESTINATION, f"Mensagem de teste {n}")
            return not is_failure(result)

        async def via_aiohttp(credentials: InstanceCredentials, n: int) -> bool:
            params, headers, body = _request(credentials, n)
            async with session.post(url, params=params, headers=headers, json=body) as answer:
                await answer.read()
                return answer.status < 300  # noqa: PLR2004 - any 2xx

        async def via_httpx(
            client: httpx.AsyncClient, credentials: InstanceCredentials, n: int
        ) -> bool:
            params, headers, body = _request(credentials, n)
            answer = await client.post(url, params=params, headers=headers, json=body)
            return answer.is_success

        sides: dict[str, Call] = {
            "wapi_client": via_wapi,
            "bare_aiohttp": via_aiohttp,
            "httpx_aiohttp": lambda c, n: via_httpx(over_aiohttp, c, n),
            "bare_httpx": lambda c, n: via_httpx(plain, c, n),
        }
        for call in sides.values():  # warm-up: connections opened, code paths hot
            await run_side(call, items, workers * 4)
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for index in range(rounds):
            order = SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]
            for side in order:
                figures = await run_side(sides[side], items, calls)
                results[side].append(figures)
                sys.stdout.write(
                    f"round {index + 1} {side}: {figures['rps']:.0f} calls/s, "
                    f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                    f"{figures['failures']} failures\n"
                )
                sys.stdout.flush()
    summary = {
        side: {
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "failures": sum(r["failures"] for r in runs),
            "per_round_rps": [round(r["rps"]) for r in runs],
        }
        for side, runs in results.items()
    }
    ceiling = summary["bare_aiohttp"]["rps"]
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "workers": workers,
        "sides": summary,
        "ratio_to_aiohttp": {side: ratio(summary[side]["rps"], ceiling) for side in SIDES},
        "ratio_to_httpx": {
            side: ratio(summary[side]["rps"], summary["bare_httpx"]["rps"]) for side in SIDES
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure_logging(json=True, level="INFO")  # as the services run: per-call lines at DEBUG
    specs = [(f"PC{n:04d}", f"tok{n:04d}", f"55119{n:08d}") for n in range(args.instances)]
    items = [InstanceCredentials(instance_id=i, token=SecretStr(t)) for i, t, _ in specs]
    with tempfile.TemporaryDirectory(prefix="zapgate-bench-") as tmp:
        simulator, url = start_simulator(Path(tmp), specs)
        try:
            figures = asyncio.run(bench(url + "/v1", items, args.rounds, args.calls))
        finally:
            simulator.stop()
    for side in SIDES:
        s = figures["sides"][side]
        sys.stdout.write(
            f"{side}: median {s['rps']:.0f} calls/s ({figures['ratio_to_aiohttp'][side]:.2f} of "
            f"bare aiohttp, {figures['ratio_to_httpx'][side]:.1f}x bare httpx), "
            f"p99 {s['p99_ms']:.1f} ms\n"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
