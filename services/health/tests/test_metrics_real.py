"""Health's `/metrics` moves when its events happen: the app over real NATS, PostgreSQL and the
W-API simulator, read over HTTP on its probe port, through one outage episode."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from zapgate.devservers.postgres import free_port
from zapgate.health.app import create_app, health_service
from zapgate.testkit.metrics import Exposition
from zapgate.wapi.simulator.models import RestartMode

from .conftest import Harness

pytestmark = pytest.mark.real

PHONE = "5511999990000"


async def test_an_outage_episode_moves_ticks_states_transitions_episodes_and_restarts(  # noqa: PLR0915 - one episode, every metric it moves
    harness: Harness,
) -> None:
    """Connected, then disconnected (confirmed, restarted), then back and settled: each tick
    counts; the state gauges follow; one transition each way; one episode opened, then closed
    with its duration; one outage and one recovered notice; one restart."""
    port = free_port()
    app = create_app(
        harness.settings(probe_host="127.0.0.1", probe_port=port),
        clock=harness.clock,
        timer=harness.timer,
        provider=harness.provider,
        configure_logs=False,
        on_tick=harness.ticks.put_nowait,
    )
    await harness.stack.enter_async_context(app)
    service = health_service(app)
    http = await harness.stack.enter_async_context(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)
    )

    async def scrape() -> Exposition:
        response = await http.get("/metrics")
        response.raise_for_status()
        return Exposition(response.text)

    def moved(after: Exposition, before: Exposition, name: str, **labels: str) -> float:
        return after.value(name, labels) - before.value(name, labels)

    await harness.register(service, "M1", phone=PHONE)
    start = await scrape()
    await service.tick()
    up = await scrape()

    harness.simulator.set_restart("M1", RestartMode.NEVER)
    harness.simulator.set_connected("M1", connected=False)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    down = await scrape()
    [health] = await service.repository.health("M1")
    assert health.outage_started_at is not None
    opened_at = health.outage_started_at

    harness.simulator.set_connected("M1", connected=True)
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    harness.clock.advance(timedelta(minutes=5))
    await service.tick()
    settled = await scrape()

    ticks = "zapgate_health_tick_duration_seconds_count"
    assert [moved(s, start, ticks) for s in (up, down, settled)] == [1, 2, 4]
    state = "zapgate_health_instances"
    assert up.value(state, {"state": "connected", "reason": "none"}) == 1
    assert down.value(state, {"state": "connected", "reason": "none"}) == 0
    assert down.value(state, {"state": "disconnected", "reason": "none"}) == 1
    assert settled.value(state, {"state": "disconnected", "reason": "none"}) == 0
    assert settled.value(state, {"state": "connected", "reason": "none"}) == 1
    transitions = "zapgate_health_state_transitions_total"
    edges = {"from_state": "connected", "to_state": "disconnected"}
    assert moved(down, up, transitions, **edges) == 1
    assert moved(settled, down, transitions, from_state="disconnected", to_state="connected") == 1
    episodes = "zapgate_health_outage_episodes_total"
    assert moved(down, up, episodes) == 1
    assert moved(settled, down, episodes) == 0
    open_now = "zapgate_health_outage_episodes_open"
    assert (up.value(open_now), down.value(open_now), settled.value(open_now)) == (0, 1, 0)
    duration = "zapgate_health_outage_episode_duration_seconds"
    assert moved(down, up, f"{duration}_count") == 0
    assert moved(settled, down, f"{duration}_count") == 1
    closed_after = (harness.clock.now() - opened_at).total_seconds()
    assert moved(settled, down, f"{duration}_sum") == pytest.approx(closed_after)
    notices = "zapgate_health_notices_total"
    assert moved(down, up, notices, kind="outage") == 1
    assert moved(settled, down, notices, kind="recovered") == 1
    assert moved(down, up, "zapgate_health_restarts_total", outcome="accepted") == 1
