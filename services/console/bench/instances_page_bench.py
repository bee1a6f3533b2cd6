# ruff: noqa: INP001, T201 - a benchmark script run by hand (`./taskw bench:console`), printing
"""Server time of the console's instances page with 1,000 instances (on demand, not a test).

    python services/console/bench/instances_page_bench.py [--instances 1000] [--requests 50]
        [--rounds 3] [--out docs/console/benchmark.md]

A real nats-server; a stand-in for health's and the sender's APIs that answers
`zg.api.health.instances.health` with N instances (mixed states, pre-serialized, so the figure
is the console's own time, not health's database) and `zg.api.sender.stuck_counts`; the console
served by uvicorn on loopback, logged in, asked for `/` over HTTP. Baselines in the same run:
`/healthz` (bare HTTP round trip through the same server) and the NATS request + JSON decode of
the N instances alone. Medians of rounds; target: under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import uvicorn
from nats.aio.msg import Msg
from pydantic import SecretStr

from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.console.app import Ports, create_app
from zapgate.console.ports import AuditEntry
from zapgate.console.settings import ConsoleSettings
from zapgate.contracts import subjects
from zapgate.contracts.health import HealthReply, InstanceHealth, InstanceState
from zapgate.contracts.sending import StuckCountsReply
from zapgate.devservers.nats import NatsServer
from zapgate.devservers.postgres import free_port

TARGET_MS = 300.0
PASSWORD = "bench-password-7c1e"  # noqa: S105 - made up for a throwaway server


class MemoryAudit:
    async def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    async def recent(self, *, limit: int, instance_id: str | None = None) -> list[AuditEntry]:
        chosen = [e for e in self.entries if instance_id is None or e.instance_id == instance_id]
        return chosen[-limit:][::-1]

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []


def instances(count: int) -> list[InstanceHealth]:
    now = datetime.now(UTC)
    shapes = [
        (InstanceState.CONNECTED, None),
        (InstanceState.DEGRADED, "SESSION_INCOMPLETE"),
        (InstanceState.DISCONNECTED, None),
        (InstanceState.DEGRADED, "DELIVERY_STALLED"),
        (InstanceState.UNKNOWN, None),
    ]
    found = []
    for number in range(count):
        state, reason = shapes[number % len(shapes)]
        found.append(
            InstanceHealth(
                instance_id=f"inst-{number:05d}",
                display_name=f"Loja {number:05d}",
                managed=True,
                paused=number % 17 == 0,
                state=state,
                reason=reason,
                phone=f"55119{number:08d}" if state is InstanceState.CONNECTED else None,
                since=now - timedelta(minutes=number % 600),
                last_check_at=now - timedelta(seconds=number % 300),
                last_restart_attempt_at=(
                    now - timedelta(minutes=3) if state is InstanceState.DISCONNECTED else None
                ),
                outage_started_at=(
                    now - timedelta(minutes=5) if state is not InstanceState.CONNECTED else None
                ),
            )
        )
    return found


async def timed(call: Callable[[], Awaitable[None]], requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def run(args: argparse.Namespace, store: Path) -> dict[str, list[float]]:
    server = NatsServer(store).start()
    try:
        return await measure(args, server.url)
    finally:
        server.stop()


async def measure(args: argparse.Namespace, nats_url: str) -> dict[str, list[float]]:
    reply = HealthReply(ok=True, instances=instances(args.instances)).model_dump_json().encode()
    counts = (
        StuckCountsReply(
            ok=True, counts={f"inst-{n:05d}": n % 4 for n in range(0, args.instances, 3)}
        )
        .model_dump_json()
        .encode()
    )
    responder = await nats.connect(nats_url)

    async def on_health(msg: Msg) -> None:
        await msg.respond(reply)

    async def on_counts(msg: Msg) -> None:
        await msg.respond(counts)

    await responder.subscribe(subjects.API_HEALTH_GET, cb=on_health)
    await responder.subscribe(subjects.API_SENDER_STUCK_COUNTS, cb=on_counts)
    await responder.flush()
    port = free_port("127.0.0.1")
    settings = ConsoleSettings(
        environment="test",
        nats_url=nats_url,
        database_url=SecretStr("postgresql://unused@127.0.0.1/unused"),
        session_secret=SecretStr("b" * 48),
        operators={"bench": SecretStr(Argon2Passwords().hash(PASSWORD))},
        cookie_secure=False,
        log_level="WARNING",
    )
    app = create_app(settings, ports=Ports(audit=MemoryAudit()), configure_logs=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes no startup event to await
        await asyncio.sleep(0.05)
    figures: dict[str, list[float]] = {"page": [], "healthz": [], "nats_fetch": []}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            login = await http.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert token is not None  # noqa: S101 - the page carries its token
            await http.post(
                "/login", data={"login": "bench", "password": PASSWORD, "csrf": token.group(1)}
            )
            page = await http.get("/")
            page.raise_for_status()
            assert page.text.count('sse-swap="instancia-') == args.instances  # noqa: S101

            async def get_page() -> None:
                (await http.get("/")).raise_for_status()

            async def get_healthz() -> None:
                (await http.get("/healthz")).raise_for_status()

            async def nats_fetch() -> None:
                answer = await responder.request(subjects.API_HEALTH_GET, b"{}", timeout=10)
                HealthReply.model_validate_json(answer.data)

            for round_number in range(args.rounds):
                for name, call in (
                    ("page", get_page),
                    ("healthz", get_healthz),
                    ("nats_fetch", nats_fetch),
                ):
                    median = statistics.median(await timed(call, args.requests))
                    figures[name].append(median)
                print(
                    f"round {round_number + 1}: page {figures['page'][-1]:.1f} ms, "
                    f"/healthz {figures['healthz'][-1]:.1f} ms, "
                    f"NATS fetch + decode {figures['nats_fetch'][-1]:.1f} ms"
                )
    finally:
        server.should_exit = True
        await serving
        await responder.close()
    return figures


def report(args: argparse.Namespace, figures: dict[str, list[float]]) -> str:
    page = statistics.median(figures["page"])
    healthz = statistics.median(figures["healthz"])
    fetch = statistics.median(figures["nats_fetch"])
    verdict = "met" if page < TARGET_MS else "**not met**"
    return "\n".join(
        [
            "# Console: instances page server time",
            "",
            (
                "Regenerated by `./taskw bench:console` "
                "(`services/console/bench/instances_page_bench.py`); do not edit by hand."
            ),
            "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            (
                f"- instances: {args.instances}; requests per round: {args.requests}; "
                f"rounds: {args.rounds} (median of the per-round medians)"
            ),
            f"- machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
            "",
            "| what | median ms |",
            "| --- | --- |",
            f"| GET / (instances page, {args.instances} rows) | {page:.1f} |",
            f"| baseline: GET /healthz on the same server | {healthz:.1f} |",
            f"| baseline: NATS request + decode of {args.instances} instances | {fetch:.1f} |",
            "",
            (
                f"Target: under {TARGET_MS:.0f} ms: {verdict}. The page's own share (rendering "
                f"{args.instances} cards and rows, pt-BR times) is about "
                f"{max(page - healthz - fetch, 0):.1f} ms."
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/console/benchmark.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        figures = asyncio.run(run(args, Path(store) / "nats"))
    text = report(args, figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
