"""Health's metrics (Prometheus), served on its probe port's `/metrics`.

Every label value comes from a closed set of ours, never from a payload: `state` an
`InstanceState` value, `reason` a `DegradedReason` value (`none` without one, `other` for one
this build does not know), `kind` a `NotificationKind` value, `outcome` of a restart
`accepted`/`failed`.

    zapgate_health_tick_duration_seconds                         histogram, one per tick
    zapgate_health_instances{state, reason}                      gauge, after each tick
    zapgate_health_outage_episodes_open                          gauge, after each tick
    zapgate_health_state_transitions_total{from_state, to_state} counter
    zapgate_health_outage_episodes_total                         counter, episodes opened
    zapgate_health_outage_episode_duration_seconds               histogram, opened to closed
    zapgate_health_blips_total                                   counter, unconfirmed suspicions
    zapgate_health_notices_total{kind}                           counter, operator notices queued
    zapgate_health_restarts_total{outcome}                       counter, restarts requested

`HealthMetrics.for_registry(registry)` returns the one set of metrics of that registry
(`zapgate.runtime.metrics.RegistryMetrics`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from zapgate.contracts.health import DegradedReason, InstanceState, NotificationKind
from zapgate.runtime.metrics import RegistryMetrics, bounded

if TYPE_CHECKING:
    from datetime import datetime

    from prometheus_client import CollectorRegistry

    from zapgate.health.ports import Change, InstanceCensus

_STATES = frozenset(state.value for state in InstanceState)
_REASONS = frozenset(reason.value for reason in DegradedReason)
_KINDS = frozenset(kind.value for kind in NotificationKind)
# Seconds. A tick over a few instances takes milliseconds; 100,000 must fit in 5 minutes.
TICK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Seconds. An episode lasts at least the settle window (2 minutes by default), up to days.
EPISODE_BUCKETS = (
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 259200.0,
)  # fmt: skip


class HealthMetrics(RegistryMetrics):
    """Health's metrics registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register on `registry`; prefer `for_registry`, which never registers twice."""
        self.tick_duration = Histogram(
            "zapgate_health_tick_duration_seconds",
            "Seconds one tick took: checks, confirmations, restarts, settling, outbox flush.",
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.instances = Gauge(
            "zapgate_health_instances",
            "Registered instances by stored state and degraded reason, as of the last tick.",
            ["state", "reason"],
            registry=registry,
        )
        self.episodes_open = Gauge(
            "zapgate_health_outage_episodes_open",
            "Instances with an open outage episode, as of the last tick.",
            registry=registry,
        )
        self.transitions = Counter(
            "zapgate_health_state_transitions",
            "Instance state transitions, by from and to state.",
            ["from_state", "to_state"],
            registry=registry,
        )
        self.episodes = Counter(
            "zapgate_health_outage_episodes",
            "Outage episodes opened (an instance that could deliver became unable to).",
            registry=registry,
        )
        self.episode_duration = Histogram(
            "zapgate_health_outage_episode_duration_seconds",
            "Seconds from an outage episode's start to its close (good for the settle window).",
            buckets=EPISODE_BUCKETS,
            registry=registry,
        )
        self.blips = Counter(
            "zapgate_health_blips",
            "Suspected outages a confirming live check found good.",
            registry=registry,
        )
        self.notices = Counter(
            "zapgate_health_notices",
            "Operator notices queued, by kind (outage, unstable, recovered).",
            ["kind"],
            registry=registry,
        )
        self.restarts = Counter(
            "zapgate_health_restarts",
            "Restarts requested from the provider, by outcome (accepted, failed).",
            ["outcome"],
            registry=registry,
        )
        self._census_labels: set[tuple[str, str]] = set()
        self._census_lock = threading.Lock()

    def changed(self, change: Change, now: datetime) -> None:
        """Count what one saved decision did: a transition, an episode opened or closed (its
        duration up to `now`), a blip, a notice."""
        before, decision = change.record.status, change.decision
        if decision.transition is not None:
            self.transitions.labels(
                bounded(decision.transition.from_state.value, _STATES),
                bounded(decision.transition.to_state.value, _STATES),
            ).inc()
        if not before.in_episode and decision.status.in_episode:
            self.episodes.inc()
        if before.outage_started_at is not None and not decision.status.in_episode:
            seconds = (now - before.outage_started_at).total_seconds()
            self.episode_duration.observe(max(seconds, 0.0))
        if decision.blip:
            self.blips.inc()
        if decision.notification is not None:
            self.notices.labels(bounded(decision.notification.kind.value, _KINDS)).inc()

    def census(self, census: InstanceCensus) -> None:
        """Set the instance gauges; a (state, reason) no instance holds any more reads 0."""
        counts: dict[tuple[str, str], int] = {}
        for (state, reason), count in census.by_state.items():
            key = (bounded(state, _STATES), bounded(reason, _REASONS))
            counts[key] = counts.get(key, 0) + count
        with self._census_lock:
            for key in self._census_labels - counts.keys():
                self.instances.labels(*key).set(0)
            for key, count in counts.items():
                self.instances.labels(*key).set(count)
            self._census_labels |= counts.keys()
        self.episodes_open.set(census.open_episodes)
