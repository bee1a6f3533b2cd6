"""The local stack and the demo, end to end: real nats-server, PostgreSQL, simulator, services."""

from __future__ import annotations

import io
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from zapgate.devservers.postgres import free_port
from zapgate.localstack.cli import DEMO_PACE, report
from zapgate.localstack.demo import SCENARIOS, DemoTarget, run_demo
from zapgate.localstack.processes import ProcessNotReadyError, ProcessSpec, ServiceProcess
from zapgate.localstack.stack import RealWapiConfig, Stack, StackConfig

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("stack"),
        nats_port=0,
        postgres_port=0,
        sim_port=0,
        ingest_port=0,
        ingest_probe_port=0,
        health_probe_port=0,
        sender_probe_port=0,
    ).model_copy(update=DEMO_PACE)
    with Stack(config, RealWapiConfig(wapi_instance_id=None, wapi_token=None)) as running:
        yield running


def test_stack_starts_every_part_and_points_the_demo_instance_webhooks_at_ingest(
    stack: Stack,
) -> None:
    """Every process answers /readyz and the simulator's six slots point at ingest."""
    endpoints = stack.endpoints
    assert endpoints is not None
    assert endpoints.sim_url is not None
    assert set(stack.processes) == {"wapi-sim", "ingest", "health", "sender"}
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


async def test_the_demo_shows_every_scenario_passing_on_a_real_stack(stack: Stack) -> None:
    """Every demo scenario passes against the real stack, and the report says so."""
    assert stack.endpoints is not None
    results = await run_demo(DemoTarget.of(stack.endpoints, stack.config))
    out = io.StringIO()
    code = report(results, out)
    text = out.getvalue()
    assert len(results) == len(SCENARIOS)
    assert [r.name for r in results if not r.passed] == [], text
    assert code == 0
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios passed" in text


def test_a_stack_that_cannot_start_stops_what_it_already_started(tmp_path: Path) -> None:
    """When the simulator cannot bind its port, up() raises and NATS and PostgreSQL are stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = StackConfig(
            data_dir=tmp_path,
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
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_zapgate_up_runs_until_sigint_then_stops_everything_in_reverse_order(
    tmp_path: Path,
) -> None:
    """`zapgate-up` prints where each part listens, and one SIGINT stops it all cleanly."""
    ports = {name: str(free_port()) for name in _PORT_NAMES}
    env = {f"ZAPGATE_UP_{name.upper()}": port for name, port in ports.items()}
    up = ServiceProcess(
        ProcessSpec(
            name="zapgate-up",
            argv=("zapgate-up",),
            env=env | {"ZAPGATE_UP_DATA_DIR": str(tmp_path / "data")},
            ready_url=f"http://127.0.0.1:{ports['sender_probe_port']}/readyz",
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
    assert stops == ["sender", "health", "ingest", "wapi-sim", "nats-server", "PostgreSQL"]


_PORT_NAMES = (
    "nats_port",
    "postgres_port",
    "sim_port",
    "ingest_port",
    "ingest_probe_port",
    "health_probe_port",
    "sender_probe_port",
)
