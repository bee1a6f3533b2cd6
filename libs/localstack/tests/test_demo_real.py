"""The local stack and the demo, end to end: real nats-server, PostgreSQL, simulator, services."""

from __future__ import annotations

import asyncio
import io
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from zapgate.devservers.postgres import free_port
from zapgate.localstack.cli import DEMO_PACE, report
from zapgate.localstack.demo import (
    SCENARIO_TOKEN,
    SCENARIOS,
    DemoTarget,
    ScenarioResult,
    run_demo,
)
from zapgate.localstack.processes import (
    ProcessNotReadyError,
    ProcessSpec,
    ServiceProcess,
    resolve_executable,
)
from zapgate.localstack.stack import SIM_INSTANCE_TOKEN, RealWapiConfig, Stack, StackConfig
from zapgate.runtime.db import with_psycopg_driver
from zapgate.runtime.token_crypto import PREFIX
from zapgate.testkit.metrics import Exposition, dashboard_metric_names, dashboard_queries

pytestmark = [pytest.mark.real, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "zapgate.json"


def _stack_dir() -> Path:
    # Not under pytest's basetemp: PostgreSQL runs as another OS user and must traverse the
    # path, and any other pytest session that starts meanwhile tightens pytest-of-<user> to 0700.
    return Path(tempfile.mkdtemp(prefix="zapgate-stack-"))


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    path = _stack_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    data_dir = _stack_dir()
    config = StackConfig(
        data_dir=data_dir,
        nats_port=0,
        postgres_port=0,
        sim_port=0,
        ingest_port=0,
        ingest_probe_port=0,
        health_probe_port=0,
        sender_probe_port=0,
        console_port=0,
    ).model_copy(update=DEMO_PACE)
    with Stack(config, RealWapiConfig(wapi_instance_id=None, wapi_token=None)) as running:
        yield running
    shutil.rmtree(data_dir, ignore_errors=True)


def test_stack_starts_every_part_and_points_the_demo_instance_webhooks_at_ingest(
    stack: Stack,
) -> None:
    """Every process answers /readyz and the simulator's six slots point at ingest."""
    endpoints = stack.endpoints
    assert endpoints is not None
    assert endpoints.sim_url is not None
    assert set(stack.processes) == {"wapi-sim", "ingest", "health", "sender", "console"}
    assert endpoints.console_url is not None
    assert httpx.get(f"{endpoints.console_url}/readyz").status_code == 200
    assert endpoints.console_login is not None
    assert endpoints.console_login.startswith("operador / ")
    assert endpoints.console_url in endpoints.describe()
    for name, url in endpoints.probes.items():
        assert httpx.get(f"{url}/readyz").status_code == 200, name
    slots = httpx.get(
        f"{endpoints.sim_url}/_sim/calls",
        params={"instance_id": endpoints.instance_id},
    ).json()
    pointed = {call["operation"] for call in slots if call["operation"].startswith("update-")}
    assert len(pointed) == 6
    assert all(
        call["body"] == {"value": endpoints.ingest_webhook_url}
        for call in slots
        if call["operation"].startswith("update-")
    )
    assert "ingest webhooks" in endpoints.describe()
    assert endpoints.ingest_webhook_url.rsplit("/", 1)[-1] not in endpoints.describe()


@pytest.fixture(scope="module")
def demo_results(stack: Stack) -> list[ScenarioResult]:
    """The full demo (`./taskw demo`), run once against the module's stack."""
    assert stack.endpoints is not None
    return asyncio.run(run_demo(DemoTarget.of(stack.endpoints, stack.config)))


def test_the_demo_shows_every_scenario_passing_on_a_real_stack(
    stack: Stack, demo_results: list[ScenarioResult]
) -> None:
    """Every demo scenario passes against the real stack, and the report says so."""
    results = demo_results
    out = io.StringIO()
    code = report(results, out)
    text = out.getvalue()
    assert len(results) == len(SCENARIOS)
    assert [r.name for r in results if not r.passed] == [], text
    assert code == 0
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios passed" in text
    sender, health, ingest = (_scrape(stack, name) for name in ("sender", "health", "ingest"))
    assert sender.value("zapgate_sender_sends_total", {"outcome": "sent"}) >= 1
    assert sender.value("zapgate_sender_sends_total", {"outcome": "failed"}) >= 1
    assert sender.value("zapgate_sender_command_to_outcome_seconds_count") >= 1
    assert sender.value("zapgate_sender_stuck_alerts_total") >= 1
    assert sender.value("zapgate_wapi_call_duration_seconds_count", {"operation": "send-text"}) >= 1
    assert health.value("zapgate_health_tick_duration_seconds_count") >= 1
    assert health.value("zapgate_health_instances") >= 1
    assert health.value("zapgate_health_outage_episodes_total") >= 1
    assert health.value("zapgate_health_state_transitions_total") >= 1
    published = {"disposition": "published", "kind": "message_status"}
    assert ingest.value("zapgate_ingest_webhook_dispositions_total", published) >= 1
    # The archiver runs in ingest's child process; its consumer counts on ingest's /metrics.
    archived = {"consumer": "ingest-archiver", "outcome": "acked", "process": "archiver"}
    assert ingest.value("zapgate_consumer_messages_total", archived) >= 1
    assert ingest.value("zapgate_child_metrics_up", {"process": "archiver"}) == 1


def test_every_metric_the_dashboard_queries_is_served_by_some_service(stack: Stack) -> None:
    """The Grafana dashboard in deploy/ reads only metrics some service's /metrics exposes, so
    renaming a metric without the dashboard (or the other way round) fails here."""
    served: set[str] = set()
    for name in ("sender", "health", "ingest"):
        served |= _scrape(stack, name).names()
    queried = dashboard_metric_names(DASHBOARD)
    assert len(dashboard_queries(DASHBOARD)) >= 20
    assert queried - served == set()


def _scrape(stack: Stack, service: str) -> Exposition:
    assert stack.endpoints is not None
    response = httpx.get(f"{stack.endpoints.probes[f'{service} probes']}/metrics", timeout=10)
    response.raise_for_status()
    return Exposition(response.text)


def test_after_the_full_demo_no_column_of_any_table_holds_an_instance_token_in_clear(
    stack: Stack, demo_results: list[ScenarioResult]
) -> None:
    """#14's acceptance scan: after `./taskw demo`, every column of every table (as text) is
    searched for each instance token the demo used; none holds one, while the instance
    registry holds ciphertext (the tokens were stored, encrypted)."""
    assert demo_results, "the demo ran no scenario"
    assert stack.endpoints is not None
    tokens = {SIM_INSTANCE_TOKEN, SCENARIO_TOKEN}
    engine = sa.create_engine(with_psycopg_driver(stack.endpoints.database_url))
    found: dict[str, set[str]] = {}
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_type = 'BASE TABLE' "
                    "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
            assert len(tables) >= 10, tables  # every service's tables, not an empty database
            for schema, table in tables:
                name = f'"{schema}"."{table}"'
                for needle in [*tokens, PREFIX]:
                    # S608: names come from information_schema; the needle is a parameter.
                    hits = conn.scalar(
                        sa.text(f"SELECT count(*) FROM {name} t WHERE strpos(t::text, :n) > 0"),  # noqa: S608
                        {"n": needle},
                    )
                    if hits:
                        found.setdefault(needle, set()).add(table)
            registered = conn.scalar(sa.text("SELECT count(*) FROM instances"))
    finally:
        engine.dispose()
    assert registered, "the demo registered no instance"
    assert {needle: tables for needle, tables in found.items() if needle in tokens} == {}
    assert "instances" in found.get(PREFIX, set())


def test_a_stack_that_cannot_start_stops_what_it_already_started(stack_dir: Path) -> None:
    """When the simulator cannot bind its port, up() raises and NATS and PostgreSQL are stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = StackConfig(
            data_dir=stack_dir,
            nats_port=0,
            postgres_port=0,
            sim_port=taken.getsockname()[1],
            ready_timeout=30,
        )
        stack = Stack(config, RealWapiConfig(wapi_instance_id=None, wapi_token=None))
        with pytest.raises(ProcessNotReadyError, match="wapi-sim exited"):
            stack.up()
    assert stack.processes == {}
    assert stack.nats is None
    assert stack.postgres is None
    assert not (stack_dir / "postgres" / "postmaster.pid").exists()


def test_zapgate_up_runs_until_sigint_then_stops_everything_in_reverse_order(
    tmp_path: Path, stack_dir: Path
) -> None:
    """`zapgate-up` prints where each part listens, and one SIGINT stops it all cleanly."""
    ports = {name: str(free_port()) for name in _PORT_NAMES}
    env = {f"ZAPGATE_UP_{name.upper()}": port for name, port in ports.items()}
    up = ServiceProcess(
        ProcessSpec(
            name="zapgate-up",
            argv=("zapgate-up",),
            env=env | {"ZAPGATE_UP_DATA_DIR": str(stack_dir)},
            # The console starts last: ready means the whole stack is up.
            ready_url=f"http://127.0.0.1:{ports['console_port']}/readyz",
            log_path=tmp_path / "up.log",
        ),
        ready_timeout=90,
    )
    up.start()
    try:
        up.signal(signal.SIGINT)
        code = up.stop(grace=60)
    finally:
        up.kill()
    printed = up.log_tail(20_000)
    assert code == 0, printed
    assert f"nats://127.0.0.1:{ports['nats_port']}" in printed
    assert f"http://127.0.0.1:{ports['ingest_port']}/webhooks/***" in printed
    assert "SIGINT, stopping everything" in printed
    stops = [line.split("stopped ", 1)[1] for line in printed.splitlines() if ": stopped " in line]
    assert f"console            http://127.0.0.1:{ports['console_port']}" in printed
    assert "console login      operador / " in printed
    assert stops == [
        "console",
        "sender",
        "health",
        "ingest",
        "wapi-sim",
        "nats-server",
        "PostgreSQL",
    ]


_PORT_NAMES = (
    "nats_port",
    "postgres_port",
    "sim_port",
    "ingest_port",
    "ingest_probe_port",
    "health_probe_port",
    "sender_probe_port",
    "console_port",
)


def test_with_real_credentials_the_stack_registers_that_instance_and_points_its_slots(
    tmp_path: Path, stack_dir: Path
) -> None:
    """With ZAPGATE_WAPI_* and a public URL, no simulator is started by the stack: the given
    instance is registered in health and its six slots point at `<public url>/webhooks/...`
    (a simulator started apart stands in for W-API)."""
    sim_port = free_port()
    provider = ServiceProcess(
        ProcessSpec(
            name="provider",
            argv=("zapgate-wapi-sim", "--port", str(sim_port), "--instance", "real-1:tok:5511977"),
            ready_url=f"http://127.0.0.1:{sim_port}/_sim/calls",
            log_path=tmp_path / "provider.log",
        ),
        ready_timeout=30,
    )
    provider.start()
    try:
        real = RealWapiConfig(
            wapi_base_url=f"http://127.0.0.1:{sim_port}/v1",
            wapi_instance_id="real-1",
            wapi_token=SecretStr("tok"),
            public_url="https://tunnel.example/",
        )
        config = StackConfig(data_dir=stack_dir).model_copy(update=dict.fromkeys(_PORT_NAMES, 0))
        with Stack(config, real) as stack:
            assert stack.endpoints is not None
            assert "wapi-sim" not in stack.processes
            assert stack.endpoints.sim_url is None
            public = stack.endpoints.public_webhook_url
            calls = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/calls").json()
            status = subprocess.run(  # noqa: S603 - the health CLI, a fixed argv
                [
                    resolve_executable("zapgate-health"),
                    "--nats-url",
                    stack.endpoints.nats_url,
                    "status",
                    "real-1",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
    finally:
        provider.stop()
    assert public is not None
    assert public.startswith("https://tunnel.example/webhooks/")
    slots = [c for c in calls if c["operation"].startswith("update-webhook-")]
    assert len(slots) == 6
    assert {c["instance_id"] for c in slots} == {"real-1"}
    assert all(c["body"] == {"value": public} for c in slots)
    assert status.returncode == 0, status.stdout
    assert status.stdout.startswith("real-1\t")
