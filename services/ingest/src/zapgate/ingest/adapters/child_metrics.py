"""The gateway's `/metrics` with its archiver child's metrics in it (one exposition).

`zapgate-ingest run` archives in a child process with its own registry and probe port
(`archiver_process.py`). When the gateway's `/metrics` is scraped, `ChildMetrics` reads the
child's `/metrics` over loopback (httpx, `SCRAPE_TIMEOUT`), parses it with prometheus_client's
own parser, labels every child sample `process="<name>"` and merges the families into the
gateway's: a family both have (`zapgate_consumer_messages`, `process_*`) is written once, with
one HELP/TYPE. The read is awaited in the probe app's handler, on the probe server, never on
the webhook route; a child that does not answer in time leaves the gateway's metrics whole and
sets `zapgate_child_metrics_up{process}` to 0 (1 after each scrape that read it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx
import structlog
from prometheus_client import Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

SCRAPE_TIMEOUT: Final = 0.5  # seconds the child's /metrics may take before it counts as down
_CREATED: Final = "_created"

log = structlog.get_logger("zapgate.ingest.child_metrics")


class ChildMetrics:
    """Serves `registry` plus the child's metrics found at `url`, labelled `process=name`.

    ```python
    child = ChildMetrics(registry, "http://127.0.0.1:9101/metrics", name="archiver")
    body = await child.exposition()   # bytes, Prometheus text format
    await child.aclose()
    ```
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        url: str,
        *,
        name: str,
        timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        self._registry = registry
        self._url = url
        self._name = name
        self._client = httpx.AsyncClient(timeout=timeout)
        self._up = Gauge(
            "zapgate_child_metrics_up",
            "1 when the last scrape of this /metrics read the child process's metrics, else 0",
            ["process"],
            registry=registry,
        ).labels(name)
        self._was_up: bool | None = None

    async def exposition(self) -> bytes:
        """The gateway's families with the child's merged in (Prometheus text format, UTF-8).

        Never raises for the child: unreachable, slow (over the timeout), an error status or
        an unparsable body leave only the gateway's own metrics, with the up gauge at 0.
        """
        child = await self._scrape()
        return generate_latest(_Merged(self._registry, child, self._name))

    async def aclose(self) -> None:
        """Close the HTTP client (the service is stopping)."""
        await self._client.aclose()

    async def _scrape(self) -> list[Metric]:
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
            families = list(text_string_to_metric_families(response.text))
        except (httpx.HTTPError, ValueError) as error:
            self._up.set(0)
            if self._was_up is not False:
                log.warning(
                    "child_metrics_unavailable",
                    process=self._name,
                    error=type(error).__name__,
                    reason="the child's /metrics did not answer in time or could not be read: "
                    "only the gateway's own metrics are served",
                )
            self._was_up = False
            return []
        self._up.set(1)
        if self._was_up is False:
            log.info("child_metrics_available_again", process=self._name)
        self._was_up = True
        return families


class _Merged:
    """A collector (what `generate_latest` reads): the registry's families, the child's added."""

    def __init__(self, registry: CollectorRegistry, child: list[Metric], name: str) -> None:
        self._registry = registry
        self._child = child
        self._name = name

    def collect(self) -> Iterator[Metric]:
        own = {family.name: family for family in self._registry.collect()}
        for family in _fold_created(self._child):
            samples = [
                sample._replace(labels={**sample.labels, "process": self._name})
                for sample in family.samples
            ]
            mine = own.get(family.name)
            if mine is None:
                family.samples = samples
                own[family.name] = family
            elif mine.type == family.type:
                mine.samples = [*mine.samples, *samples]
            # A family of the same name and another type cannot share one TYPE line: the
            # gateway's own is kept (never seen among ours; the names are the services' own).
        yield from own.values()


def _fold_created(families: Iterable[Metric]) -> list[Metric]:
    """Put the parsed `X_created` gauges back into their family `X` (the parser reads them as
    families of their own), so that merging by name never writes `X_created` twice."""
    by_name = {family.name: family for family in families}
    for name in [name for name in by_name if name.endswith(_CREATED)]:
        parent = by_name.get(name.removesuffix(_CREATED))
        if parent is not None and parent.type in {"counter", "histogram", "summary"}:
            parent.samples = [*parent.samples, *by_name.pop(name).samples]
    return list(by_name.values())
