"""Health over the real servers: nats-server, PostgreSQL and the W-API simulator over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from faststream import FastStream
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceNotification, InstanceStateChanged
from zapgate.health.app import create_app, health_service
from zapgate.health.service import HealthService, RoundReport
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import ManualClock
from zapgate.wapi.client import WapiClient
from zapgate.wapi.simulator.handle import Simulator

from .fakes import AdvancingTimer

TOKEN = "tok-secret-123"
OPERATOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Harness:
    """Running health replicas plus what a test needs to drive and observe them."""

    nats_url: str
    database_url: str
    clock: ManualClock
    timer: AdvancingTimer
    simulator: Simulator
    provider: WapiClient
    nc: Client
    js: JetStreamContext
    ticks: asyncio.Queue[RoundReport] = field(default_factory=asyncio.Queue)
    apps: list[FastStream] = field(default_factory=list)
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def settings(self, **overrides: Any) -> HealthSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": SecretStr(self.database_url),
            "nats_url": self.nats_url,
            "tick_interval": timedelta(minutes=5),
            "install_schedule": False,
            "restart_cooldown": timedelta(minutes=30),
            "provider_concurrency": 8,
            "probe_port": 0,
        }
        if "operator_webhook_url" in overrides:
            values["operator_webhook_secret"] = SecretStr(OPERATOR_SECRET)
        values.update(overrides)
        return HealthSettings(**values)

    async def start(self, **overrides: Any) -> HealthService:
        app = create_app(
            self.settings(**overrides),
            clock=self.clock,
            timer=self.timer,
            provider=self.provider,
            configure_logs=False,
            serve_probe=False,
            on_tick=self.ticks.put_nowait,
        )
        await self.stack.enter_async_context(app)
        self.apps.append(app)
        return health_service(app)

    async def register(self, service: HealthService, *instance_ids: str, **sim: Any) -> None:
        for instance_id in instance_ids:
            self.simulator.add_instance(instance_id, TOKEN, **sim)
            await service.register(
                instance_id=instance_id,
                display_name=f"Loja {instance_id}",
                token=TOKEN,
                managed=True,
                replace=False,
            )

    async def publish_tick(self) -> None:
        await self.js.publish(subjects.HEALTH_TICK, b"{}", stream=subjects.STREAM_TICKS)

    async def next_tick(self, timeout: float = 20.0) -> RoundReport:
        return await asyncio.wait_for(self.ticks.get(), timeout)

    async def events(
        self, subject: str, count: int, timeout: float = 10.0
    ) -> list[InstanceStateChanged | InstanceNotification]:
        """The first `count` events stored on `subject` (a fresh ephemeral consumer)."""
        sub = await self.js.pull_subscribe(subject, stream=subjects.STREAM_HEALTH)
        try:
            got: list[InstanceStateChanged | InstanceNotification] = []
            while len(got) < count:
                for msg in await sub.fetch(count - len(got), timeout=timeout):
                    await msg.ack()
                    model = (
                        InstanceNotification
                        if ".notification." in msg.subject
                        else InstanceStateChanged
                    )
                    got.append(model.model_validate_json(msg.data))
            return got
        finally:
            await sub.unsubscribe()

    async def changes(self, instance_id: str, count: int) -> list[InstanceStateChanged]:
        got = await self.events(subjects.state_changed_subject(instance_id), count)
        return [e for e in got if isinstance(e, InstanceStateChanged)]

    async def notifications(self, instance_id: str, count: int) -> list[InstanceNotification]:
        got = await self.events(subjects.notification_subject(instance_id), count)
        return [e for e in got if isinstance(e, InstanceNotification)]

    async def stored_count(self, subject: str) -> int:
        info = await self.js.stream_info(subjects.STREAM_HEALTH, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())


@pytest.fixture
async def harness(
    nats_url: str,
    database_url: str,
    wapi_simulator: Simulator,
    wapi_client: WapiClient,
) -> AsyncIterator[Harness]:
    nc = await nats.connect(nats_url)
    clock = ManualClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    h = Harness(
        nats_url=nats_url,
        database_url=database_url,
        clock=clock,
        timer=AdvancingTimer(clock),
        simulator=wapi_simulator,
        provider=wapi_client,
        nc=nc,
        js=nc.jetstream(),
    )
    try:
        yield h
    finally:
        await h.stack.aclose()
        await nc.close()
