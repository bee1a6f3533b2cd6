"""Ingest's Prometheus metrics (one registry per app, served on the probe port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class IngestMetrics:
    """Per-instance counts per kind, last webhook time, outcomes and the spool depth."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "zapgate_ingest_webhooks",
            "Webhooks accepted, by instance and routed kind",
            ["instance_id", "kind"],
            registry=registry,
        )
        self.last_webhook = Gauge(
            "zapgate_ingest_last_webhook_timestamp_seconds",
            "Unix time of the last accepted webhook, by instance",
            ["instance_id"],
            registry=registry,
        )
        self.outcomes = Counter(
            "zapgate_ingest_requests",
            "Webhook requests by outcome (published, duplicate, spooled, quarantined, refusals)",
            ["outcome"],
            registry=registry,
        )
        self.spool_pending = Gauge(
            "zapgate_ingest_spool_pending", "Webhooks in the local spool", registry=registry
        )
