"""Ingest's Prometheus metrics (one registry per app, served on the probe port).

Labels never take unbounded values from payloads: an instance id becomes a label through
`bounds.bounded_id(token=True)` and only for the first `max_instances` distinct ids; later ones
are counted under `_other`. A `kind` label is a `WebhookKind` value or the quarantine kind
(`other` otherwise); a `disposition` a `Disposition` value.
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from zapgate.contracts.bounds import MAX_TOKEN_CHARS, bounded_id
from zapgate.contracts.webhooks import QUARANTINE_KIND, WebhookKind

OTHER_INSTANCES: Final = "_other"
NO_INSTANCE: Final = ""
OTHER_KIND: Final = "other"
_KINDS = frozenset({*(kind.value for kind in WebhookKind), QUARANTINE_KIND})


class IngestMetrics:
    """Per-instance counts per kind, last webhook time, outcomes, refusals and the spool depth."""

    def __init__(self, registry: CollectorRegistry, *, max_instances: int = 1000) -> None:
        self._max_instances = max_instances
        self._labels: set[str] = set()
        self._lock = threading.Lock()
        # Label children already made, so a webhook costs no label lookup (prometheus_client's
        # `labels()` takes a lock and builds a tuple key each call).
        self._dispositions: dict[tuple[str, str], Counter] = {}
        self._outcomes: dict[str, Counter] = {}
        self._accepted: dict[tuple[str | None, str], tuple[Counter, Gauge]] = {}
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
        self.dispositions = Counter(
            "zapgate_ingest_webhook_dispositions",
            "Webhook bodies the gateway answered, by routed kind and disposition (published, "
            "duplicate, spooled, quarantined, too_large, not_durable)",
            ["kind", "disposition"],
            registry=registry,
        )
        self.sanitized = Counter(
            "zapgate_ingest_sanitized",
            "Accepted webhooks the sanitiser changed, by fix",
            ["fix"],
            registry=registry,
        )
        self.connections_refused = Counter(
            "zapgate_ingest_connections_refused",
            "HTTP connections refused (over the connection cap) or cut (header or body timeout)",
            ["reason"],
            registry=registry,
        )
        self.spool_pending = Gauge(
            "zapgate_ingest_spool_pending", "Webhooks in the local spool", registry=registry
        )

    def outcome(self, outcome: str) -> None:
        """Count one request by outcome (a `Disposition` value or a refusal)."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.outcomes.labels(outcome)
        child.inc()

    def disposed(self, kind: str, disposition: str) -> None:
        """Count one body the gateway answered; a kind outside the known set counts as `other`."""
        key = (kind if kind in _KINDS else OTHER_KIND, disposition)
        child = self._dispositions.get(key)
        if child is None:  # the label sets are bounded (kinds x dispositions): kept once made
            child = self._dispositions[key] = self.dispositions.labels(*key)
        child.inc()

    def accepted(self, instance_id: str | None, kind: str, now: float) -> None:
        """Count one accepted webhook of `instance_id` and `kind` at `now` (Unix seconds)."""
        key = (instance_id, kind)
        children = self._accepted.get(key)
        if children is None:
            instance = self.instance_label(instance_id)
            children = (self.webhooks.labels(instance, kind), self.last_webhook.labels(instance))
            # Bounded like the labels: only short ids within the budget are kept as keys.
            if instance != OTHER_INSTANCES and len(instance_id or "") <= MAX_TOKEN_CHARS:
                self._accepted[key] = children
        children[0].inc()
        children[1].set(now)

    def instance_label(self, instance_id: str | None) -> str:
        """The label value for `instance_id`: bounded, and `_other` once the budget is spent."""
        if instance_id is None:
            return NO_INSTANCE
        label = bounded_id(instance_id, token=True)
        with self._lock:
            if label in self._labels:
                return label
            if len(self._labels) >= self._max_instances:
                return OTHER_INSTANCES
            self._labels.add(label)
        return label
