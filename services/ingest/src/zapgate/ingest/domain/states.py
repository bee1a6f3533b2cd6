"""The last instance state health published, kept in memory (no database read per webhook)."""

from __future__ import annotations

import asyncio
from typing import Final

from zapgate.contracts.health import InstanceState, InstanceStateChanged

STALE_STATES: Final = frozenset({InstanceState.DISCONNECTED, InstanceState.DEGRADED})


class KnownStates:
    """Latest `InstanceStateChanged` per instance, and which contradictions were already told."""

    def __init__(self) -> None:
        self._latest: dict[str, InstanceStateChanged] = {}
        self._warned: set[str] = set()
        self._changed = asyncio.Condition()

    def record(self, change: InstanceStateChanged) -> None:
        current = self._latest.get(change.instance_id)
        if current is not None and current.occurred_at > change.occurred_at:
            return  # an older change redelivered after a newer one
        self._latest[change.instance_id] = change
        self._warned.discard(change.instance_id)

    async def apply(self, change: InstanceStateChanged) -> None:
        """`record`, and wake whoever waits for this instance's state."""
        async with self._changed:
            self.record(change)
            self._changed.notify_all()

    async def wait_for(self, instance_id: str, state: InstanceState, timeout: float) -> None:
        """Return once `instance_id` is known to be in `state` (tests, diagnostics)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.state_of(instance_id) is state)

    def state_of(self, instance_id: str) -> InstanceState | None:
        change = self._latest.get(instance_id)
        return change.to_state if change is not None else None

    def contradicted_by_proof_of_life(self, instance_id: str) -> InstanceStateChanged | None:
        """The stale state a proof of life contradicts, once per state (then None until it
        changes), so a phantom disconnect is reported without a line per webhook."""
        change = self._latest.get(instance_id)
        if change is None or change.to_state not in STALE_STATES or instance_id in self._warned:
            return None
        self._warned.add(instance_id)
        return change
