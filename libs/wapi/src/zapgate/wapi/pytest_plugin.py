"""Pytest fixtures for the W-API simulator (registered by the workspace's root conftest).

- `wapi_simulator_server` (session): the simulator over real HTTP on a free port.
- `wapi_simulator`: its `Simulator` handle, reset before each test.
- `wapi_client`: a `WapiClient` pointed at the simulator, with short timeouts.
- `wapi_webhook_receiver`: a real HTTP endpoint recording what the simulator posts to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from zapgate.wapi.client import WapiClient, WapiTimeouts
from zapgate.wapi.simulator.receiver import WebhookReceiver
from zapgate.wapi.simulator.server import SimulatorServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from zapgate.wapi.simulator.handle import Simulator

# Short enough that a hang fails a test fast, long enough for a loaded CI machine.
TEST_TIMEOUT = WapiTimeouts(connect=2.0, pool=2.0, read=5.0, total=10.0)


@pytest.fixture(scope="session")
def wapi_simulator_server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
def wapi_simulator(wapi_simulator_server: SimulatorServer) -> Simulator:
    simulator = wapi_simulator_server.simulator
    simulator.reset()
    return simulator


@pytest.fixture
async def wapi_client(
    wapi_simulator: Simulator, wapi_simulator_server: SimulatorServer
) -> AsyncIterator[WapiClient]:
    del wapi_simulator  # requested for its reset
    async with WapiClient(base_url=wapi_simulator_server.base_url, timeout=TEST_TIMEOUT) as client:
        yield client


@pytest.fixture(scope="session")
def _wapi_webhook_receiver_server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def wapi_webhook_receiver(_wapi_webhook_receiver_server: WebhookReceiver) -> WebhookReceiver:
    _wapi_webhook_receiver_server.clear()
    return _wapi_webhook_receiver_server
