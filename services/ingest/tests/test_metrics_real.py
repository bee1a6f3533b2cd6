"""Ingest's `/metrics` counts each webhook by routed kind and disposition, over real HTTP into
a real nats-server and PostgreSQL."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from zapgate.contracts.webhooks import QUARANTINE_KIND, WebhookKind
from zapgate.ingest.domain.routing import route
from zapgate.runtime.clock import SystemClock
from zapgate.testkit import webhooks as samples
from zapgate.testkit.ingest import SECRET
from zapgate.testkit.metrics import Exposition

if TYPE_CHECKING:
    from zapgate.ingest.adapters.http_server import RunningServer

pytestmark = pytest.mark.real

URL = f"/webhooks/{SECRET}"
DISPOSITIONS = "zapgate_ingest_webhook_dispositions_total"


async def test_each_kind_and_disposition_is_counted_once_per_body(
    ingest: RunningServer, http: httpx.AsyncClient
) -> None:
    """One body of every shape: published under its kind; one again: duplicate; bytes that are
    not JSON: quarantined under the quarantine kind."""
    shapes = samples.every_shape()
    now = SystemClock().now()
    expected: dict[str, int] = {}
    for body in shapes.values():
        kind = route(body, now).kind.value
        expected[kind] = expected.get(kind, 0) + 1
        response = await http.post(URL, content=json.dumps(body))
        assert response.json()["disposition"] == "published"
    again = await http.post(URL, content=json.dumps(samples.status()))
    refused = await http.post(URL, content=b"\xff\xfe not json")

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ingest.runtime.probe_port}", timeout=5
    ) as probes:
        metrics = Exposition((await probes.get("/metrics")).text)

    assert again.json()["disposition"] == "duplicate"
    assert refused.status_code == 400
    assert set(expected) == {kind.value for kind in WebhookKind}
    for kind, count in expected.items():
        assert metrics.value(DISPOSITIONS, {"kind": kind, "disposition": "published"}) == count
    duplicate = {"kind": WebhookKind.MESSAGE_STATUS.value, "disposition": "duplicate"}
    assert metrics.value(DISPOSITIONS, duplicate) == 1
    quarantined = {"kind": QUARANTINE_KIND, "disposition": "quarantined"}
    assert metrics.value(DISPOSITIONS, quarantined) == 1
    assert metrics.value(DISPOSITIONS) == len(shapes) + 2
