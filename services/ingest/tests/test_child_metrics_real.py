"""The gateway's /metrics with a child process's metrics merged in (`adapters.child_metrics`),
over real HTTP on loopback: one valid exposition, the child's samples labelled, and the
gateway's own metrics whole when the child is down or does not answer in time."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from zapgate.ingest.adapters.child_metrics import ChildMetrics
from zapgate.ingest.archiver_process import free_port
from zapgate.runtime.probes import create_probe_app, serve_probes
from zapgate.testkit.metrics import Exposition

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real

UP = "zapgate_child_metrics_up"


def registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """A gateway's and a child's registry sharing the consumer counter's family, as ours do."""
    gateway, child = CollectorRegistry(), CollectorRegistry()
    for registry, consumer, count in ((gateway, "ingest-states", 3), (child, "archiver", 5)):
        Counter(
            "zapgate_consumer_messages", "Deliveries", ["consumer", "outcome"], registry=registry
        ).labels(consumer, "acked").inc(count)
    Gauge("zapgate_ingest_spool_pending", "Spooled", registry=gateway).set(2)
    Counter("zapgate_dead_letters", "Dead letters", ["reason_code"], registry=child).labels(
        "archive_failed"
    ).inc()
    return gateway, child


@pytest.fixture
async def child_probes() -> AsyncIterator[tuple[CollectorRegistry, CollectorRegistry, str]]:
    gateway, child = registries()
    server = await serve_probes(create_probe_app({}, registry=child), "127.0.0.1", 0)
    try:
        yield gateway, child, f"http://127.0.0.1:{server.port}/metrics"
    finally:
        await server.stop()


async def test_the_childs_families_are_merged_into_the_gateways_with_its_label(
    child_probes: tuple[CollectorRegistry, CollectorRegistry, str],
) -> None:
    gateway, _child, url = child_probes
    merged = ChildMetrics(gateway, url, name="archiver")
    try:
        text = (await merged.exposition()).decode()
    finally:
        await merged.aclose()
    for kind in ("# HELP ", "# TYPE "):
        names = [line.split()[2] for line in text.splitlines() if line.startswith(kind)]
        assert len(names) == len(set(names)), text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    consumer = families["zapgate_consumer_messages"]
    assert consumer.type == "counter"
    found = {
        (sample.labels.get("process"), sample.labels["consumer"], sample.value)
        for sample in consumer.samples
        if sample.name == "zapgate_consumer_messages_total"
    }
    assert found == {(None, "ingest-states", 3.0), ("archiver", "archiver", 5.0)}
    exposition = Exposition(text)
    labels = {"reason_code": "archive_failed", "process": "archiver"}
    assert exposition.value("zapgate_dead_letters_total", labels) == 1
    assert exposition.value("zapgate_ingest_spool_pending") == 2
    assert exposition.value(UP, {"process": "archiver"}) == 1


async def test_a_child_that_is_down_leaves_the_gateways_metrics_and_says_so() -> None:
    gateway, child = registries()
    port = free_port("127.0.0.1")  # nobody listens there yet
    merged = ChildMetrics(gateway, f"http://127.0.0.1:{port}/metrics", name="archiver")
    try:
        down = Exposition((await merged.exposition()).decode())
        assert down.value(UP, {"process": "archiver"}) == 0
        assert down.value("zapgate_ingest_spool_pending") == 2
        assert down.value("zapgate_consumer_messages_total", {"process": "archiver"}) == 0
        server = await serve_probes(create_probe_app({}, registry=child), "127.0.0.1", port)
        try:
            back = Exposition((await merged.exposition()).decode())
        finally:
            await server.stop()
    finally:
        await merged.aclose()
    assert back.value(UP, {"process": "archiver"}) == 1
    assert back.value("zapgate_consumer_messages_total", {"process": "archiver"}) == 5


async def test_a_child_that_does_not_answer_in_time_counts_as_down() -> None:
    """A child that accepts the connection and never answers: the scrape gives up at the
    timeout, and the gateway's /metrics (its probe app) still answers."""
    gateway, _child = registries()
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    merged = ChildMetrics(gateway, f"http://127.0.0.1:{port}/metrics", name="archiver", timeout=0.2)
    app = create_probe_app({}, registry=gateway, exposition=merged.exposition)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as probe:
            answer = await probe.get("/metrics")
    finally:
        await merged.aclose()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert answer.status_code == 200
    exposition = Exposition(answer.text)
    assert exposition.value(UP, {"process": "archiver"}) == 0
    assert exposition.value("zapgate_ingest_spool_pending") == 2
