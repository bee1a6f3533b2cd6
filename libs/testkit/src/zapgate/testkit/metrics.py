"""Reading a service's `/metrics` in tests: samples by name and labels, waits on a change,
and the metric names a Grafana dashboard queries (so a dashboard cannot drift from the code).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

# A metric name inside a PromQL expression: ours all start with `zapgate_`.
_METRIC = re.compile(r"\bzapgate_[a-z0-9_]+\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


@dataclass(frozen=True, slots=True)
class Exposition:
    """One scrape of a `/metrics` page in the Prometheus text format."""

    text: str

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sum of the samples `name` whose labels include `labels`; 0.0 when there is none
        yet (a labelled counter has no sample before its first increment)."""
        wanted = dict(labels or {})
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name and wanted.items() <= sample.labels.items()
        )

    def names(self) -> set[str]:
        """Every name a query may use: each family's, its samples', and a histogram's or a
        counter's derived series even before their first sample."""
        found: set[str] = set()
        for family in text_string_to_metric_families(self.text):
            found.add(family.name)
            found.update(sample.name for sample in family.samples)
            if family.type == "counter":
                found.add(f"{family.name}_total")
            if family.type == "histogram":
                found.update(f"{family.name}{suffix}" for suffix in _HISTOGRAM_SUFFIXES)
        return found


async def wait_for_value(  # noqa: PLR0913 - what to read and when it is enough, keyword-only
    scrape: Callable[[], Awaitable[str]],
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    at_least: float,
    timeout: float = 10.0,
    poll: float = 0.05,
) -> float:
    """Scrape until sample `name{labels}` reaches `at_least`; its value. `TimeoutError` with
    the last value seen when it does not within `timeout` seconds."""
    seen = 0.0
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = Exposition(await scrape()).value(name, labels)
                if seen >= at_least:
                    return seen
                await asyncio.sleep(poll)  # polling a condition under a deadline, not a wait
    except TimeoutError:
        raise TimeoutError(f"{name}{dict(labels or {})} = {seen}, wanted >= {at_least}") from None


def dashboard_queries(path: Path) -> list[str]:
    """Every PromQL `expr` of a Grafana dashboard JSON (panels, nested rows, targets)."""
    return [
        str(target["expr"])
        for panel in _panels(json.loads(path.read_text()))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_metric_names(path: Path) -> set[str]:
    """The `zapgate_*` metric names the dashboard's queries read."""
    return {name for expr in dashboard_queries(path) for name in _METRIC.findall(expr)}


def _panels(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from _panels(panel)
