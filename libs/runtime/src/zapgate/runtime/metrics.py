"""What every service's Prometheus metrics share: one set per registry, and bounded labels.

```python
class SenderMetrics(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter("zapgate_sender_sends", "...", ["outcome"], registry=registry)

metrics = SenderMetrics.for_registry()          # prometheus_client's default REGISTRY
label = bounded(status, STATUSES)               # `other` outside the set, `none` for None
```
`for_registry` registers a class's metrics on a registry once, so any number of services in
one process (tests, a CLI beside a service) share them without a "duplicated timeseries" error.
"""

from __future__ import annotations

import threading
from typing import ClassVar, Final, Self, cast
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry

NONE: Final = "none"
"""The label value of an absent value (an outcome without an error code)."""
OTHER: Final = "other"
"""The label value of a value outside its known set: never a payload's own string."""


def bounded(value: str | None, known: frozenset[str], *, missing: str = NONE) -> str:
    """`value` as a label when it is in `known`; `missing` for None; `OTHER` for anything else."""
    if value is None:
        return missing
    return value if value in known else OTHER


class RegistryMetrics:
    """Base of a service's metrics: subclasses create their collectors in `__init__(registry)`."""

    _instances: ClassVar[WeakKeyDictionary[CollectorRegistry, dict[type, RegistryMetrics]]] = (
        WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the collectors on `registry`; call `for_registry`, which does it once."""

    @classmethod
    def for_registry(cls, registry: CollectorRegistry = REGISTRY) -> Self:
        """This class's metrics on `registry`, registering them the first time."""
        with RegistryMetrics._lock:
            of_registry = RegistryMetrics._instances.setdefault(registry, {})
            metrics = of_registry.get(cls)
            if metrics is None:
                metrics = of_registry[cls] = cls(registry)
            return cast("Self", metrics)  # keyed by class: it is one
