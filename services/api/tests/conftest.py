"""Fixtures of the API's tests: health and sender with their real composition roots, the API
over real HTTP (uvicorn on a free port), real nats-server, PostgreSQL and the W-API simulator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
from faststream import TestApp
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr

from zapgate.api.app import running_api
from zapgate.api.settings import ApiSettings
from zapgate.contracts import subjects
from zapgate.contracts.health import CheckNow, CheckNowReply, RegisterInstance, RegistryReply
from zapgate.health.app import create_app as create_health
from zapgate.health.settings import HealthSettings
from zapgate.sender.app import create_app as create_sender
from zapgate.sender.settings import SenderSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client

    from zapgate.api.lifecycle import RunningApi
    from zapgate.wapi.simulator.server import SimulatorServer

INSTANCE_TOKEN = "tok-api-test"
PHONE = "5511999990000"
CUSTOMER = "5511988887777"


def cheap_hasher() -> PasswordHash:
    """Argon2id with small costs: the same code path, milliseconds instead of half a second."""
    return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


@pytest.fixture
async def services(
    nats_url: str, database_url: str, wapi_simulator_server: SimulatorServer
) -> AsyncIterator[None]:
    """Health and sender, both with their real composition roots, in this loop."""
    common: dict[str, Any] = {
        "environment": "test",
        "nats_url": nats_url,
        "database_url": SecretStr(database_url),
        "probe_host": "127.0.0.1",
        "probe_port": 0,
        "log_level": "WARNING",
        "wapi_base_url": wapi_simulator_server.base_url,
    }
    health = create_health(
        HealthSettings(**common, tick_interval=timedelta(hours=1)),
        configure_logs=False,
        serve_probe=False,
    )
    sender = create_sender(
        SenderSettings(
            **common,
            sweep_every=None,
            min_send_gap=timedelta(0),
            provider_backoff=timedelta(0),
        ),
        configure_logs=False,
    )
    async with TestApp(health), TestApp(sender):
        yield


def api_settings(nats_url: str, database_url: str, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "nats_url": nats_url,
        "database_url": SecretStr(database_url),
        "http_host": "127.0.0.1",
        "http_port": 0,
        "probe_host": "127.0.0.1",
        "probe_port": 0,
        "rate_limit_requests": 1000,
        "log_level": "WARNING",
        # Test receivers listen on 127.0.0.1 (the dev opt-in; prod refuses it).
        "webhook_allow_loopback": True,
    }
    return ApiSettings(**(values | overrides))


@pytest.fixture
async def api(nats_url: str, database_url: str) -> AsyncIterator[RunningApi]:
    async with running_api(api_settings(nats_url, database_url), hasher=cheap_hasher()) as running:
        yield running


@dataclass
class Keys:
    """Makes API keys through the real Authenticator (hashed into the real table)."""

    running: RunningApi

    async def make(self, *instances: str, name: str = "test") -> str:
        created = await self.running.runtime.auth.create_key(name, instances)
        return created.token


@pytest.fixture
def keys(api: RunningApi) -> Keys:
    return Keys(api)


@pytest.fixture
async def http(api: RunningApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=40) as client:
        yield client


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=5)
    yield client
    await client.close()


async def register(nc: Client, instance_id: str) -> None:
    """Register with health over its API and check once, as an operator would."""
    command = RegisterInstance(
        instance_id=instance_id,
        display_name=instance_id,
        token=SecretStr(INSTANCE_TOKEN),
        replace=True,
    )
    answer = await nc.request(
        subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), timeout=20
    )
    assert RegistryReply.model_validate_json(answer.data).ok
    checked = await nc.request(
        subjects.API_HEALTH_CHECK_NOW,
        CheckNow(instance_id=instance_id).model_dump_json().encode(),
        timeout=20,
    )
    assert CheckNowReply.model_validate_json(checked.data).ok


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
