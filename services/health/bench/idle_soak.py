"""On-demand idle soak of health (#13 "Done when"): healthy instances, a 5 s tick, N minutes.

    .venv/bin/python services/health/bench/idle_soak.py --minutes 30 --instances 5

Starts nats-server, an embedded PostgreSQL, the W-API simulator and `zapgate-health run` as real
processes (tick PT5S, the server-scheduled tick), registers complete sessions over health's NATS
API, lets it run, then counts what an operator would see: state changes after each instance's
first connected, notices, restarts, and the blips health logged (single failed looks that a
confirming check cleared). An idle run must show 0 state changes and 0 notices. `--report PATH`
appends the figures to a Markdown file (docs/benchmarks.md).
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
import sqlalchemy as sa
from pydantic import SecretStr

from bench.procs import BIN, ServiceProcess, infra, rss_mib, start_simulator
from zapgate.contracts import subjects
from zapgate.contracts.health import RegisterInstance, RegistryReply
from zapgate.devservers.postgres import free_port
from zapgate.runtime.db import create_engine

TOKEN = "idle-soak-token-7f3a"  # noqa: S105 - a simulator token, not a secret


async def register(nats_url: str, ids: list[str]) -> None:
    nc = await nats.connect(nats_url)
    try:
        for instance_id in ids:
            command = RegisterInstance(
                instance_id=instance_id, display_name=instance_id, token=SecretStr(TOKEN)
            )
            answer = await nc.request(
                subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), timeout=30
            )
            reply = RegistryReply.model_validate_json(answer.data)
            if not reply.ok:
                raise RuntimeError(f"register {instance_id}: {reply.error}")
    finally:
        await nc.close()


async def counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    queries = {
        "first_connected": "SELECT count(*) FROM instance_transitions WHERE from_state = 'unknown'",
        "state_changes_after_first": (
            "SELECT count(*) FROM instance_transitions WHERE from_state <> 'unknown'"
        ),
        "notices": "SELECT count(*) FROM instance_notifications",
        "restart_attempts": (
            "SELECT count(*) FROM instances WHERE last_restart_attempt_at IS NOT NULL"
        ),
        "blips_counted": "SELECT coalesce(sum(blip_count), 0) FROM instances",
        "checked": "SELECT count(*) FROM instances WHERE last_check_at IS NOT NULL",
    }
    try:
        async with engine.connect() as conn:
            return {
                k: int((await conn.execute(sa.text(q))).scalar_one()) for k, q in queries.items()
            }
    finally:
        await engine.dispose()


def log_counts(log: Path) -> dict[str, int]:
    found = {"ticks": 0, "blip_lines": 0, "non_json_lines": 0}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line).get("event")
        except (json.JSONDecodeError, AttributeError):
            found["non_json_lines"] += 1
            continue
        found["ticks"] += event == "health_tick"
        found["blip_lines"] += event == "check_blip"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    ids = [f"idle-{n:03d}" for n in range(args.instances)]
    with tempfile.TemporaryDirectory(prefix="zg-idle-") as tmp, infra(Path(tmp)) as base:
        workdir = Path(tmp)
        sim, sim_url = start_simulator(
            workdir, [(i, TOKEN, f"55119000{n:05d}") for n, i in enumerate(ids)]
        )
        probe_port = free_port()
        prefix = "ZAPGATE_HEALTH_"
        env = {
            f"{prefix}NATS_URL": base.nats_url,
            f"{prefix}DATABASE_URL": base.database_url,
            f"{prefix}PROBE_HOST": "127.0.0.1",
            f"{prefix}PROBE_PORT": str(probe_port),
            f"{prefix}LOG_JSON": "true",
            f"{prefix}ENVIRONMENT": "dev",
            f"{prefix}WAPI_BASE_URL": sim_url + "/v1",
            f"{prefix}TICK_INTERVAL": "PT5S",
        }
        health = ServiceProcess("health", [str(BIN / "zapgate-health"), "run"], workdir, env)
        health.start().wait_ready(f"http://127.0.0.1:{probe_port}/readyz")
        started = datetime.now(UTC)
        try:
            asyncio.run(register(base.nats_url, ids))
            rss_start = rss_mib(health.pid)
            time.sleep(args.minutes * 60)  # the soak itself: wall-clock time passing, on purpose
            rss_end = rss_mib(health.pid)
            figures = asyncio.run(counts(base.database_url))
        finally:
            health.stop()
            sim.stop()
        figures |= log_counts(health.log_path)
    figures |= {"rss_start_mib": round(rss_start), "rss_end_mib": round(rss_end)}
    text = (
        f"\n### Health idle soak ({started:%Y-%m-%d %H:%M} UTC, {args.minutes:g} min, "
        f"{args.instances} complete sessions, tick PT5S)\n\n"
        "`services/health/bench/idle_soak.py`: real processes, simulator over HTTP.\n\n"
        "| figure | value |\n| --- | ---: |\n"
        + "".join(f"| {key} | {value} |\n" for key, value in figures.items())
    )
    sys.stdout.write(text)
    if args.report is not None:
        with args.report.open("a") as report:
            report.write(text)


if __name__ == "__main__":
    main()
