"""Provider-call metrics reach the `/metrics` that health and sender serve (the probe app's
default registry), with no instance id, phone or token in any label."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from zapgate.runtime.probes import create_probe_app
from zapgate.wapi import InstanceCredentials, SendAccepted, WapiClient
from zapgate.wapi.simulator import Simulator, SimulatorServer

pytestmark = pytest.mark.real

INSTANCE, TOKEN, PHONE = "MET001-AAAAAA-BBBBBB", "tok-metrics-123", "5511900000001"


async def test_provider_call_metrics_appear_on_a_services_metrics_endpoint(
    wapi_simulator: Simulator, wapi_simulator_server: SimulatorServer
) -> None:
    """A client built as the services build it records on the default registry; the probe
    app's /metrics shows the latency histogram and failures by call, never the ids."""
    wapi_simulator.add_instance(INSTANCE, TOKEN, phone=PHONE)
    credentials = InstanceCredentials(instance_id=INSTANCE, token=SecretStr(TOKEN))
    wrong = InstanceCredentials(instance_id=INSTANCE, token=SecretStr("wrong-token"))
    async with WapiClient(base_url=wapi_simulator_server.base_url) as client:
        assert isinstance(await client.send_text(credentials, PHONE, "oi"), SendAccepted)
        await client.status_instance(wrong)
    transport = httpx.ASGITransport(app=create_probe_app({}))
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as probe:
        body = (await probe.get("/metrics")).text
    assert 'zapgate_wapi_call_duration_seconds_count{operation="send-text",outcome="ok"}' in body
    assert (
        'zapgate_wapi_call_failures_total{code="PROVIDER_UNAUTHORIZED",operation="status-instance"}'
        in body
    )
    assert "zapgate_wapi_calls_in_flight" in body
    assert not any(secret in body for secret in (INSTANCE, TOKEN, PHONE, "wrong-token"))
