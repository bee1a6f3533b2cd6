"""Prometheus metrics of provider calls: latency and failures by call, retries, in flight.

Labels are low-cardinality on purpose: `operation` is one of the W-API call names this
adapter makes (`status-instance`, `send-text`, ...), `outcome` is `ok` or a failure `code`
(`PROVIDER_TIMEOUT`, ...). Never an instance id, phone, message or status code.

    zapgate_wapi_call_duration_seconds{operation, outcome}  histogram, one per call (retry inside)
    zapgate_wapi_call_failures_total{operation, code}       counter
    zapgate_wapi_read_retries_total{operation}              counter, reads retried once
    zapgate_wapi_calls_in_flight                            gauge

`WapiMetrics.for_registry(registry)` returns the one set of metrics of that registry, so any
number of clients in one process (tests, a CLI next to a service) share them without a
"duplicated timeseries" error. `WapiClient` uses prometheus_client's default `REGISTRY`
unless given `metrics=`, which is the registry the services' `/metrics` serve.
"""

from __future__ import annotations

import threading
from typing import ClassVar
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Seconds. W-API answers in tens to hundreds of ms; the top buckets catch gateways and the
# read timeout (10 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OK = "ok"


class WapiMetrics:
    """The provider-call metrics registered on one registry."""

    _by_registry: ClassVar[WeakKeyDictionary[CollectorRegistry, WapiMetrics]] = WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register on `registry`; prefer `for_registry`, which never registers twice."""
        self.duration = Histogram(
            "zapgate_wapi_call_duration_seconds",
            "W-API call latency in seconds, by call and outcome (ok or failure code).",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "zapgate_wapi_call_failures",
            "W-API calls that ended in a failure, by call and failure code.",
            ["operation", "code"],
            registry=registry,
        )
        self.read_retries = Counter(
            "zapgate_wapi_read_retries",
            "Idempotent W-API reads retried once on a fresh connection after a broken exchange.",
            ["operation"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "zapgate_wapi_calls_in_flight",
            "W-API calls in flight in this process.",
            registry=registry,
        )
        # Labelled children cached: `labels()` costs a lock and a dict lookup per call.
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._failures: dict[tuple[str, str], Counter] = {}

    @classmethod
    def for_registry(cls, registry: CollectorRegistry = REGISTRY) -> WapiMetrics:
        """The metrics of `registry`, registering them the first time."""
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls(registry)
                cls._by_registry[registry] = metrics
            return metrics

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        """Record one finished call; `outcome` is `OK` or the failure's code."""
        key = (operation, outcome)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.duration.labels(operation, outcome)
        child.observe(seconds)
        if outcome != OK:
            failed = self._failures.get(key)
            if failed is None:
                failed = self._failures[key] = self.failures.labels(operation, outcome)
            failed.inc()
