"""The sender's delivery-truth metrics (Prometheus), served on its probe port's `/metrics`.

Every label value comes from a closed set of ours, never from a payload: `outcome` is a
`SendStatus` value, `code` an `ErrorCode` value (`none` without an error, `other` for a code
this build does not know), `to_status` a `SendStatus` value, `result` a `Receipt` value.

    zapgate_sender_sends_total{outcome, code}                    counter, one per decided command
    zapgate_sender_command_to_outcome_seconds{outcome}           histogram, claim to outcome
    zapgate_sender_sent_to_delivered_seconds                     histogram, sent to first proof
    zapgate_sender_message_status_changes_total{to_status}       counter, receipts that moved one
    zapgate_sender_receipts_total{result}                        counter, applied/ignored/kept
    zapgate_sender_stuck_messages                                gauge, as of the last sweep
    zapgate_sender_stuck_alerts_total                            counter, MessageStuck published
    zapgate_sender_delivery_stalls_total                         counter, stalls opened
    zapgate_sender_sweep_duration_seconds                        histogram, one per sweep

`SenderMetrics.for_registry(registry)` returns the one set of metrics of that registry
(`zapgate.runtime.metrics.RegistryMetrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.sending import SendStatus
from zapgate.runtime.metrics import RegistryMetrics, bounded

if TYPE_CHECKING:
    from datetime import timedelta

    from prometheus_client import CollectorRegistry

_CODES = frozenset(code.value for code in ErrorCode)
_STATUSES = frozenset(status.value for status in SendStatus)
_PROOF = frozenset({SendStatus.DELIVERED.value, SendStatus.READ.value, SendStatus.PLAYED.value})
# Seconds. Most decisions take one provider round trip (tens of ms); held commands wait for
# their instance, up to their `hold_for` (minutes to hours).
OUTCOME_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
# Seconds. A phone online confirms in about a second; one offline for hours, or days.
DELIVERY_BUCKETS = (
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip
SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def code_label(code: str | None) -> str:
    """The `code` label of an error code: itself when it is one of ours, else `none`/`other`."""
    return bounded(code, _CODES)


def status_label(status: str) -> str:
    """The label of a send status: itself when public, else `other`."""
    return bounded(status, _STATUSES)


class SenderMetrics(RegistryMetrics):
    """The sender's metrics registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register on `registry`; prefer `for_registry`, which never registers twice."""
        self.sends = Counter(
            "zapgate_sender_sends",
            "Commands decided (outcome published for the first time), by outcome and error code.",
            ["outcome", "code"],
            registry=registry,
        )
        self.command_to_outcome = Histogram(
            "zapgate_sender_command_to_outcome_seconds",
            "Seconds from the sender's claim of a command to its published outcome, by outcome.",
            ["outcome"],
            buckets=OUTCOME_BUCKETS,
            registry=registry,
        )
        self.sent_to_delivered = Histogram(
            "zapgate_sender_sent_to_delivered_seconds",
            "Seconds from the provider's acceptance (sent) to the first delivery proof.",
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.status_changes = Counter(
            "zapgate_sender_message_status_changes",
            "Sent messages a delivery receipt moved forward, by the status reached.",
            ["to_status"],
            registry=registry,
        )
        self.receipts = Counter(
            "zapgate_sender_receipts",
            "Delivery receipts handled: applied, ignored, or kept until the send's answer.",
            ["result"],
            registry=registry,
        )
        self.stuck = Gauge(
            "zapgate_sender_stuck_messages",
            "Messages sent longer than the stuck window ago with no receipt (within the stall "
            "lookback), as of the last sweep.",
            registry=registry,
        )
        self.stuck_alerts = Counter(
            "zapgate_sender_stuck_alerts",
            "Stuck messages alerted (MessageStuck published, once per message).",
            registry=registry,
        )
        self.stalls = Counter(
            "zapgate_sender_delivery_stalls",
            "Delivery stalls opened (DeliverySignalled stalled published, once per stall).",
            registry=registry,
        )
        self.sweep_duration = Histogram(
            "zapgate_sender_sweep_duration_seconds",
            "Seconds one periodic sweep took (stuck, stalls, held commands).",
            buckets=SWEEP_BUCKETS,
            registry=registry,
        )

    def decided(self, status: str, code: str | None, took: timedelta | None) -> None:
        """One command's first outcome; `took`: from its claim (None when never claimed)."""
        outcome = status_label(status)
        self.sends.labels(outcome, code_label(code)).inc()
        if took is not None:
            self.command_to_outcome.labels(outcome).observe(max(took.total_seconds(), 0.0))

    def moved(self, from_status: str, to_status: str, since_sent: timedelta | None) -> None:
        """A receipt moved a message; `since_sent` is observed when it went from `sent` to a
        delivery proof (delivered, read, played)."""
        self.status_changes.labels(status_label(to_status)).inc()
        if from_status == SendStatus.SENT.value and to_status in _PROOF and since_sent is not None:
            self.sent_to_delivered.observe(max(since_sent.total_seconds(), 0.0))
