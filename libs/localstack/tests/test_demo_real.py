"""The local stack and the demo, end to end: real nats-server, PostgreSQL, simulator, services."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from zapgate.localstack.cli import DEMO_PACE, report
from zapgate.localstack.demo import SCENARIOS, DemoTarget, run_demo
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
        **DEMO_PACE,
    )
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


def test_stack_down_stops_every_process(tmp_path: Path) -> None:
    """A stack that could not start cleans up what it started (here: nothing is left)."""
    config = StackConfig(data_dir=tmp_path, nats_port=0, postgres_port=0, ready_timeout=1)
    stack = Stack(config, RealWapiConfig(wapi_instance_id=None, wapi_token=None))
    stack.down()
    assert stack.processes == {}
