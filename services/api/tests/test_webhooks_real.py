"""Outbound events over HTTP: a subscribed receiver gets signed outcomes, retried and deduped,
over the real stack (health, sender, the API, real NATS, PostgreSQL, the simulator)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zapgate.api.app import running_api
from zapgate.runtime.probes import serve_probes

from .conftest import CUSTOMER, INSTANCE_TOKEN, PHONE, api_settings, bearer, cheap_hasher, register

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from nats.aio.client import Client

    from zapgate.api.lifecycle import RunningApi
    from zapgate.runtime.probes import ProbeServer
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("services")]


@dataclass
class Receiver:
    """A webhook receiver over real HTTP: answers `fail_first` 500s, then 204; records all."""

    fail_first: int = 0
    seen: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    arrived: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        status = 500 if len(self.seen) < self.fail_first else 204
        self.seen.append((dict(request.headers), body, status))
        if status == 204:
            await self.arrived.put((dict(request.headers), body))
        return Response(status_code=status)

    async def next_delivered(self, timeout: float = 20) -> tuple[dict[str, str], dict[str, Any]]:
        headers, body = await asyncio.wait_for(self.arrived.get(), timeout)
        return headers, json.loads(body)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(fail_first=1)
    app = Starlette(routes=[Route("/hook", hook.endpoint, methods=["POST"])])
    server: ProbeServer = await serve_probes(app, "127.0.0.1", 0)
    yield hook, f"http://127.0.0.1:{server.port}/hook"
    await server.stop()


@pytest.fixture
async def hooks_api(nats_url: str, database_url: str) -> AsyncIterator[RunningApi]:
    settings = api_settings(nats_url, database_url, webhook_retry_schedule=(0.2,))
    async with running_api(settings, hasher=cheap_hasher()) as running:
        yield running


async def test_subscribed_receiver_gets_the_signed_outcome_once_after_a_failed_attempt(
    hooks_api: RunningApi,
    receiver: tuple[Receiver, str],
    nc: Client,
    wapi_simulator: Simulator,
) -> None:
    """First POST answered 500, retried with the same webhook-id, signature verified with the
    Standard Webhooks reference library; a replayed send adds no second delivery."""
    hook, url = receiver
    wapi_simulator.add_instance("inst-w", INSTANCE_TOKEN, phone=PHONE)
    await register(nc, "inst-w")
    token = (await hooks_api.runtime.auth.create_key("hooks", ["inst-w"])).token
    text = {"phone": CUSTOMER, "message": "Olá!"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hooks_api.port}", timeout=40) as api:
        created = await api.post(
            "/v1/subscriptions",
            json={"url": url, "events": ["message.outcome"]},
            headers=bearer(token),
        )
        secret = created.json()["secret"]
        listed = await api.get("/v1/subscriptions", headers=bearer(token))
        sent = await api.post(
            "/v1/instances/inst-w/messages/text?wait=20",
            json=text,
            headers=bearer(token) | {"Idempotency-Key": "hook-1"},
        )
        headers, event = await hook.next_delivered()
        replay = await api.post(
            "/v1/instances/inst-w/messages/text?wait=20",
            json=text,
            headers=bearer(token) | {"Idempotency-Key": "hook-1"},
        )
        second = await api.post(
            "/v1/instances/inst-w/messages/text?wait=20",
            json=text | {"message": "Segunda"},
            headers=bearer(token) | {"Idempotency-Key": "hook-2"},
        )
        _, second_event = await hook.next_delivered()

    assert created.status_code == 201
    assert secret.startswith("whsec_")
    assert "secret" not in listed.json()["subscriptions"][0]
    assert sent.json()["status"] == replay.json()["status"] == "sent"
    raw = next(body for seen_headers, body, status in hook.seen if status == 204)
    Webhook(secret).verify(raw, headers)  # raises when the signature does not match
    assert event["type"] == "message.outcome"
    assert event["data"]["command_id"] == sent.json()["command_id"]
    assert event["data"]["status"] == "sent"
    assert [status for _, _, status in hook.seen[:2]] == [500, 204]
    assert hook.seen[0][0]["webhook-id"] == hook.seen[1][0]["webhook-id"] == event["id"]
    assert second_event["data"]["command_id"] == second.json()["command_id"]
    first_ids = [h["webhook-id"] for h, _, status in hook.seen if status == 204]
    assert first_ids.count(event["id"]) == 1


async def test_subscription_is_removed_and_another_key_cannot_remove_it(
    hooks_api: RunningApi,
) -> None:
    """DELETE by its owner answers 204 and the list is empty; another key gets 404."""
    owner = (await hooks_api.runtime.auth.create_key("owner", ["*"])).token
    other = (await hooks_api.runtime.auth.create_key("other", ["*"])).token
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hooks_api.port}") as api:
        made = await api.post(
            "/v1/subscriptions", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(owner)
        )
        path = f"/v1/subscriptions/{made.json()['subscription_id']}"
        foreign = await api.delete(path, headers=bearer(other))
        removed = await api.delete(path, headers=bearer(owner))
        listed = await api.get("/v1/subscriptions", headers=bearer(owner))
        bad_url = await api.post(
            "/v1/subscriptions", json={"url": "ftp://x"}, headers=bearer(owner)
        )

    assert made.json()["events"] == ["message.outcome", "message.received", "message.status"]
    assert (foreign.status_code, foreign.json()["code"]) == (404, "NOT_FOUND")
    assert removed.status_code == 204
    assert listed.json() == {"subscriptions": []}
    assert bad_url.status_code == 422
    assert bad_url.json()["errors"][0]["field"] == "url"


async def test_a_message_received_by_ingest_reaches_the_keys_subscription_once(
    hooks_api: RunningApi,
    receiver: tuple[Receiver, str],
    nats_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A W-API webhook posted twice to real ingest becomes one signed `message.received` POST
    to the subscription of a key whose scope has the instance (not to a key without it)."""
    from zapgate.testkit import webhooks as samples  # noqa: PLC0415
    from zapgate.testkit.ingest import SECRET, make_settings, start_ingest  # noqa: PLC0415

    hook, url = receiver
    hook.fail_first = 0
    token = (await hooks_api.runtime.auth.create_key("inbox", [samples.INSTANCE])).token
    outsider = (await hooks_api.runtime.auth.create_key("outsider", ["other"])).token
    ingest = await start_ingest(make_settings(nats_url, database_url, tmp_path / "spool"))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hooks_api.port}") as api:
            made = await api.post(
                "/v1/subscriptions",
                json={"url": url, "events": ["message.received"]},
                headers=bearer(token),
            )
            await api.post(
                "/v1/subscriptions",
                json={"url": url + "?outsider=1", "events": ["message.received"]},
                headers=bearer(outsider),
            )
        async with httpx.AsyncClient(base_url=ingest.url) as webhook:
            for _ in range(2):
                answer = await webhook.post(
                    f"/webhooks/{SECRET}", json=samples.received_text("3EB0APIHOOK1")
                )
                assert answer.is_success
            await webhook.post(f"/webhooks/{SECRET}", json=samples.received_text("3EB0APIHOOK2"))
        headers, first = await hook.next_delivered()
        _, second = await hook.next_delivered()
    finally:
        await ingest.stop()

    Webhook(made.json()["secret"]).verify(hook.seen[0][1], headers)
    assert first["type"] == second["type"] == "message.received"
    # Deliveries are not ordered (README): both messages, each once, in either order.
    assert sorted([first["data"]["message_id"], second["data"]["message_id"]]) == [
        "3EB0APIHOOK1",
        "3EB0APIHOOK2",
    ]
    assert "raw" not in first["data"]
    assert len(hook.seen) == 2  # the repeat was one event; the outsider got nothing
