"""The demo: drive a running stack through the scenarios zapgate exists for, and say what happened.

Each scenario uses its own simulated instance (ids carry a run id, so the demo can run again
against the same stack), drives it through the simulator's `/_sim` HTTP control API, watches
the services' real outputs (NATS subjects, the health API, the simulator's call log, ingest's
stored rows) and returns a `ScenarioResult`: what was expected, what was observed, pass/fail.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import nats
import sqlalchemy as sa
from pydantic import BaseModel, SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    EvidenceSource,
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    NotificationKind,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
)
from zapgate.contracts.sending import (
    MessageStatusChanged,
    MessageStuck,
    SendMessage,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import WebhookKind
from zapgate.runtime.db import create_engine
from zapgate.wapi.simulator import payloads
from zapgate.wapi.simulator.models import DeliveryMode, RestartMode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.subscription import Subscription

    from zapgate.contracts.envelope import Contract
    from zapgate.localstack.stack import Endpoints, StackConfig

R = TypeVar("R", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)
SCENARIO_TOKEN = "demo-scenario-token"  # noqa: S105 - a made-up token the simulator accepts
_CUSTOMER = "5511988887777"
_DB_POLL_S = 0.2


@dataclass(frozen=True)
class DemoTarget:
    """What the demo needs to know about the running stack."""

    nats_url: str
    database_url: str
    sim_url: str
    ingest_webhook_url: str
    tick_interval: timedelta
    stuck_window: timedelta
    sweep_every: timedelta

    @classmethod
    def of(cls, endpoints: Endpoints, config: StackConfig) -> DemoTarget:
        """The target of a `Stack` brought up in this process."""
        if endpoints.sim_url is None:
            raise ValueError("the demo drives the simulator; this stack talks to real W-API")
        return cls(
            nats_url=endpoints.nats_url,
            database_url=endpoints.database_url,
            sim_url=endpoints.sim_url,
            ingest_webhook_url=endpoints.ingest_webhook_url,
            tick_interval=config.tick_interval,
            stuck_window=config.stuck_window,
            sweep_every=config.sweep_every,
        )


@dataclass
class ScenarioResult:
    """The outcome of one scenario, in plain words."""

    name: str
    expected: str
    observed: list[str] = field(default_factory=list)
    passed: bool = False

    def saw(self, text: str) -> None:
        self.observed.append(text)

    def render(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        lines = [f"[{mark}] {self.name}", f"  expected: {self.expected}"]
        lines.extend(f"  observed: {line}" for line in self.observed)
        return "\n".join(lines)


class _Demo:
    def __init__(self, target: DemoTarget, nc: Client, http: httpx.AsyncClient, run: str) -> None:
        self.target = target
        self.nc = nc
        self.http = http
        self.run = run
        self.sender = SenderClient(nc)
        self.registered: list[str] = []

    # --- the simulator -----------------------------------------------------------------------

    async def sim(self, method: str, path: str, body: object = None) -> Any:  # noqa: ANN401 - JSON
        answer = await self.http.request(method, f"/_sim{path}", json=body)
        answer.raise_for_status()
        return answer.json()

    async def add_sim_instance(
        self,
        instance_id: str,
        *,
        phone: str | None,
        webhooks: bool = True,
        delivery: DeliveryMode | None = None,
        restart_mode: RestartMode = RestartMode.COMEBACK,
    ) -> None:
        await self.sim(
            "POST",
            "/instances",
            {
                "instance_id": instance_id,
                "token": SCENARIO_TOKEN,
                "phone": phone,
                "webhook_url": self.target.ingest_webhook_url if webhooks else None,
                "delivery": delivery.value if delivery else None,
                "restart_mode": restart_mode.value,
            },
        )

    async def calls(self, instance_id: str, operation: str | None = None) -> list[dict[str, Any]]:
        query = {"instance_id": instance_id} | ({"operation": operation} if operation else {})
        answer = await self.http.get("/_sim/calls", params=query)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result

    # --- health ------------------------------------------------------------------------------

    async def request(self, subject: str, command: Contract, reply: type[R]) -> R:
        message = await self.nc.request(subject, command.model_dump_json().encode(), timeout=30)
        return reply.model_validate_json(message.data)

    async def register(self, instance_id: str, *, managed: bool = True) -> None:
        reply = await self.request(
            subjects.API_HEALTH_REGISTER,
            RegisterInstance(
                instance_id=instance_id,
                display_name=f"demo {instance_id}",
                token=SecretStr(SCENARIO_TOKEN),
                managed=managed,
                replace=True,
            ),
            RegistryReply,
        )
        if not reply.ok:
            raise RuntimeError(f"register {instance_id}: {reply.error}")
        self.registered.append(instance_id)

    async def check_now(self, instance_id: str) -> str:
        reply = await self.request(
            subjects.API_HEALTH_CHECK_NOW, CheckNow(instance_id=instance_id), CheckNowReply
        )
        if not reply.ok or not reply.checked:
            return f"check failed: {reply.error}"
        health = reply.checked[0]
        return health.state.value + (f"/{health.reason}" if health.reason else "")

    async def cleanup(self) -> None:
        for instance_id in self.registered:
            await self.request(
                subjects.API_HEALTH_REMOVE, RemoveInstance(instance_id=instance_id), RegistryReply
            )

    def send(self, instance_id: str, number: int) -> SendMessage:
        return SendMessage(
            command_id=f"{instance_id}-{number}",
            instance_id=instance_id,
            phone=_CUSTOMER,
            body=TextContent(message=f"Olá! Mensagem de demonstração {number}."),
        )

    def instance(self, label: str) -> str:
        return f"demo-{label}-{self.run}"


async def _next(
    subscription: Subscription,
    model: type[M],
    timeout: float,
    where: Callable[[M], bool] = lambda _m: True,
) -> M | None:
    """The next message on `subscription` that parses as `model` and matches, or None."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await subscription.next_msg(timeout=None)
                parsed = model.model_validate_json(message.data)
                if where(parsed):
                    return parsed
    except TimeoutError:
        return None


# --- the scenarios ---------------------------------------------------------------------------


async def healthy_send(demo: _Demo) -> ScenarioResult:
    result = ScenarioResult(
        "healthy send",
        "a send to a complete session is `sent`, then `delivered`, then `read`",
    )
    instance_id = demo.instance("healthy")
    await demo.add_sim_instance(instance_id, phone="5511900000010")
    await demo.register(instance_id)
    result.saw(f"health checked {instance_id}: {await demo.check_now(instance_id)}")
    statuses = await demo.nc.subscribe(subjects.message_status_subject(instance_id))
    outcome = await demo.sender.send(demo.send(instance_id, 1), timeout=30)
    result.saw(f"send outcome: {outcome.status.value} (provider id {outcome.provider_message_id})")
    seen: list[SendStatus] = []
    while SendStatus.READ not in seen:
        change = await _next(statuses, MessageStatusChanged, 15)
        if change is None:
            break
        seen.append(change.to_status)
    await statuses.unsubscribe()
    result.saw("status changes: " + " -> ".join(["sent", *(status.value for status in seen)]))
    result.passed = outcome.status is SendStatus.SENT and seen[-2:] == [
        SendStatus.DELIVERED,
        SendStatus.READ,
    ]
    return result


async def blocked_send(demo: _Demo) -> ScenarioResult:
    result = ScenarioResult(
        "send blocked on an incomplete session",
        "a session that says connected but has no phone: `failed`, and W-API is never asked "
        "to send",
    )
    instance_id = demo.instance("nophone")
    await demo.add_sim_instance(instance_id, phone=None)
    await demo.register(instance_id)
    result.saw(f"health checked {instance_id}: {await demo.check_now(instance_id)}")
    outcome = await demo.sender.send(demo.send(instance_id, 1), timeout=30)
    error = outcome.error
    result.saw(
        f"send outcome: {outcome.status.value}"
        + (f" ({error.code}: {error.message})" if error else "")
    )
    sends = [call for call in await demo.calls(instance_id) if call["operation"].startswith("send")]
    result.saw(f"send calls the simulator received for {instance_id}: {len(sends)}")
    result.passed = outcome.status is SendStatus.FAILED and not sends
    return result


async def phantom_disconnect(demo: _Demo) -> ScenarioResult:
    result = ScenarioResult(
        "phantom disconnect checked before it is believed",
        "a `disconnected` webhook while the phone still works makes health check the session "
        "live first: it is found connected, never marked down, and never restarted",
    )
    instance_id = demo.instance("phantom")
    await demo.add_sim_instance(instance_id, phone="5511900000030")
    # Unmanaged and not checked yet: only the webhook (and the check it triggers) moves it.
    await demo.register(instance_id, managed=False)
    result.saw(f"registered {instance_id}, its phone connected and working")
    states = await demo.nc.subscribe(subjects.state_changed_subject(instance_id))
    await demo.sim(
        "POST",
        f"/instances/{instance_id}/webhooks/disconnected",
        {"body": payloads.disconnected(instance_id=instance_id)},
    )
    first = await _next(states, InstanceStateChanged, 15)
    result.saw(
        f"after the disconnected webhook: {first.to_state.value} (from {first.source.value})"
        if first
        else "the disconnected webhook changed nothing"
    )
    later = await _next(states, InstanceStateChanged, 2)
    await states.unsubscribe()
    checks = await demo.calls(instance_id, "status-instance")
    restarts = await demo.calls(instance_id, "restart")
    result.saw(f"live checks: {len(checks)}, restarts requested: {len(restarts)}")
    result.passed = (
        first is not None
        and first.to_state is InstanceState.CONNECTED
        and later is None
        and bool(checks)
        and not restarts
    )
    return result


async def dropped_session(demo: _Demo) -> ScenarioResult:
    result = ScenarioResult(
        "dropped session found on a tick",
        "a session that drops without any webhook is found disconnected on a scheduled tick, "
        "restarted once, not restarted again inside the cooldown, and notified once",
    )
    instance_id = demo.instance("dropped")
    # No webhook URL: the provider says nothing when the session drops; a restart fails.
    await demo.add_sim_instance(
        instance_id, phone="5511900000040", webhooks=False, restart_mode=RestartMode.NEVER
    )
    await demo.register(instance_id)
    result.saw(f"health checked {instance_id}: {await demo.check_now(instance_id)}")
    states = await demo.nc.subscribe(subjects.state_changed_subject(instance_id))
    notes = await demo.nc.subscribe(subjects.notification_subject(instance_id))
    await demo.sim("PATCH", f"/instances/{instance_id}", {"connected": False})
    result.saw("the session dropped at the provider (no webhook sent)")
    tick_wait = demo.target.tick_interval.total_seconds() * 3 + 10
    down = await _next(
        states,
        InstanceStateChanged,
        tick_wait,
        lambda e: e.to_state is InstanceState.DISCONNECTED,
    )
    result.saw(
        f"health saw it {down.to_state.value} (from {down.source.value})"
        if down
        else "health never noticed"
    )
    first = await _next(notes, InstanceNotification, 15)
    result.saw(f"notification: {first.kind.value}: {first.text}" if first else "no notification")
    again = await demo.check_now(instance_id)
    result.saw(f"checked again inside the cooldown: {again}")
    restarts = await demo.calls(instance_id, "restart")
    result.saw(f"restarts requested: {len(restarts)}")
    extra = await _next(notes, InstanceNotification, 1)
    result.saw(f"further notifications: {0 if extra is None else 1}")
    await states.unsubscribe()
    await notes.unsubscribe()
    result.passed = (
        down is not None
        and down.source is EvidenceSource.TICK
        and len(restarts) == 1
        and first is not None
        and first.kind is NotificationKind.OUTAGE
        and extra is None
    )
    return result


async def stuck_message(demo: _Demo) -> ScenarioResult:
    stuck_window = demo.target.stuck_window.total_seconds()
    result = ScenarioResult(
        "message stuck in `sent`",
        f"a message the provider accepted but never delivered raises an alert after "
        f"{stuck_window:g} s",
    )
    instance_id = demo.instance("stuck")
    await demo.add_sim_instance(instance_id, phone="5511900000050", delivery=DeliveryMode.ECHO_ONLY)
    await demo.register(instance_id)
    result.saw(f"health checked {instance_id}: {await demo.check_now(instance_id)}")
    alerts = await demo.nc.subscribe(subjects.message_alert_subject(instance_id))
    started = time.monotonic()
    outcome = await demo.sender.send(demo.send(instance_id, 1), timeout=30)
    result.saw(f"send outcome: {outcome.status.value}")
    wait = stuck_window + demo.target.sweep_every.total_seconds() * 3 + 15
    alert = await _next(alerts, MessageStuck, wait)
    await alerts.unsubscribe()
    result.saw(
        f"alert after {time.monotonic() - started:.1f} s: command {alert.command_id} stuck "
        f"for {alert.stuck_for.total_seconds():.0f} s"
        if alert
        else "no alert"
    )
    result.passed = outcome.status is SendStatus.SENT and alert is not None
    return result


async def odd_payloads(demo: _Demo) -> ScenarioResult:
    result = ScenarioResult(
        "event-less presence and unknown payloads",
        "a presence payload with no `event` and a payload of an unknown event are both routed "
        "(published on their subjects) and kept (stored by ingest)",
    )
    instance_id = demo.instance("shapes")
    await demo.add_sim_instance(instance_id, phone="5511900000060")
    routed = await demo.nc.subscribe(subjects.WEBHOOKS_ALL)
    await demo.sim(
        "POST", f"/instances/{instance_id}/presence", {"chat_id": _CUSTOMER, "status": "composing"}
    )
    unknown = {"event": "webhookSomethingNew", "instanceId": instance_id, "novidade": demo.run}
    await demo.sim("POST", f"/instances/{instance_id}/webhooks/received", {"body": unknown})
    wanted = {WebhookKind.CHAT_PRESENCE.value, WebhookKind.UNROUTED.value}
    seen: set[str] = set()
    try:
        async with asyncio.timeout(15):
            while not wanted <= seen:
                message = await routed.next_msg(timeout=None)
                if json.loads(message.data).get("instance_id") == instance_id:
                    seen.add(message.subject.rsplit(".", 1)[-1])
    except TimeoutError:
        pass
    await routed.unsubscribe()
    result.saw("routed to: " + (", ".join(sorted(seen)) or "nothing"))
    kept = await _stored_kinds(demo.target.database_url, instance_id, wanted)
    result.saw("kept by ingest: " + (", ".join(sorted(kept)) or "nothing"))
    result.passed = wanted <= seen and wanted <= kept
    return result


async def _stored_kinds(database_url: str, instance_id: str, wanted: set[str]) -> set[str]:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    query = sa.text("SELECT DISTINCT kind FROM webhook_payloads WHERE instance_id = :instance_id")
    kinds: set[str] = set()
    deadline = time.monotonic() + 15
    try:
        # The archiver writes in batches a moment later; poll the table inside a deadline.
        while not wanted <= kinds and time.monotonic() < deadline:
            async with engine.connect() as conn:
                rows = await conn.execute(query, {"instance_id": instance_id})
                kinds = {row[0] for row in rows}
            if not wanted <= kinds:
                await asyncio.sleep(_DB_POLL_S)
    finally:
        await engine.dispose()
    return kinds


SCENARIOS: tuple[Callable[[_Demo], Awaitable[ScenarioResult]], ...] = (
    healthy_send,
    blocked_send,
    phantom_disconnect,
    dropped_session,
    stuck_message,
    odd_payloads,
)


async def run_demo(target: DemoTarget) -> list[ScenarioResult]:
    """Run every scenario (at once: each has its own instance) and return their results."""
    run = uuid.uuid4().hex[:8]
    nc = await nats.connect(target.nats_url, connect_timeout=5)
    try:
        async with httpx.AsyncClient(base_url=target.sim_url, timeout=30) as http:
            demo = _Demo(target, nc, http, run)
            try:
                outcomes = await asyncio.gather(
                    *(scenario(demo) for scenario in SCENARIOS), return_exceptions=True
                )
            finally:
                await demo.cleanup()
    finally:
        await nc.close()
    results: list[ScenarioResult] = []
    for scenario, outcome in zip(SCENARIOS, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed = ScenarioResult(scenario.__name__.replace("_", " "), "to run")
            failed.saw(f"it broke: {type(outcome).__name__}: {outcome}")
            results.append(failed)
        else:
            results.append(outcome)
    return results
