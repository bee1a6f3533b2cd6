"""One set of metrics per registry and class, and label values bounded to a known set."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from zapgate.runtime.metrics import NONE, OTHER, RegistryMetrics, bounded

pytestmark = pytest.mark.unit


class _Sends(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter("test_sends", "Sends.", registry=registry)


class _Ticks(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks = Counter("test_ticks", "Ticks.", registry=registry)


def test_for_registry_registers_once_per_registry_and_class() -> None:
    """The same registry gives the same object (no duplicated timeseries); another registry
    gets its own; two classes share one registry side by side."""
    one, other = CollectorRegistry(), CollectorRegistry()

    first = _Sends.for_registry(one)
    first.sends.inc()

    assert _Sends.for_registry(one) is first
    assert _Sends.for_registry(other) is not first
    assert isinstance(_Ticks.for_registry(one), _Ticks)
    assert one.get_sample_value("test_sends_total") == 1
    assert other.get_sample_value("test_sends_total") == 0


def test_bounded_keeps_known_values_and_names_the_rest() -> None:
    """Known values pass; None is `none` (or the given word); anything else is `other`."""
    known = frozenset({"sent", "failed"})

    assert bounded("sent", known) == "sent"
    assert bounded(None, known) == NONE
    assert bounded(None, known, missing="") == ""
    assert bounded("5511999990000", known) == OTHER
