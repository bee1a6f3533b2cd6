"""The instance view kept in memory: the sender's preflight without a database read per send.

Why this can never make a false "sent"
--------------------------------------
An answer kept in memory is stale the moment health changes the row, and no invalidation can
close that window alone: health's `InstanceStateChanged` travels after health's commit, a
consumer can be behind, several sender replicas share the durable consumer (one of them hears
each event), and an event can be lost to a reconnect. So the projection is never the judge of
a send. It is only trusted to *propose* one:

1. The fast path reads the projection. Only a SEND verdict from it is acted on, and then the
   command is claimed straight into `sending` with `CommandStore.claim_sending`, whose INSERT
   carries the view row's fingerprint (`InstanceView.version`: md5 of token, paused, state,
   reason, phone) and inserts only when health's `instance_gate_view` row has that same
   fingerprint *in the same statement*. An instance that became incomplete, disconnected,
   degraded, paused, re-registered (token) or removed refuses the claim at once, with no timer
   and no event needed: the re-check is the database itself, at claim time, which is exactly
   what the per-send read gave before (read, then claim: two statements; now: one).
2. A refused claim (the view changed) forgets the entry and decides again from a fresh read
   (`fresh=True`) on the ordinary path, which claims, runs the preflight on the fresh row,
   blocks, holds or live-checks as before.
3. Any verdict other than SEND from the projection is never acted on either: that path reads
   fresh too. So a stale "disconnected" cannot block a good send (a false outage is the second
   worst bug).

Invalidation still matters for freshness and cost (a stale entry costs one refused claim and a
re-read): health's state changes (the sender's `states` consumer) forget the instance's entry,
and a fill that raced with a forget is not stored (`_epoch`). Entries are bounded
(`max_entries`, oldest dropped first) and carry no expiry: staleness is harmless by step 1 and
a stale entry repairs itself on its first refused claim.

The race that remains is the one a per-send read had too: a change committed after the claim
statement ran belongs to the next command; this one already passed the gate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zapgate.sender.domain import InstanceView
    from zapgate.sender.ports import InstanceDirectory


class InstanceProjection:
    """`InstanceDirectory` over another directory (health's view in PostgreSQL), kept in memory.

    `get` answers from memory when it can (`fresh=True` reads the source and refreshes the
    entry); `forget(instance_id)` drops one entry; `clear()` drops all. `hits` and `misses`
    count answers from memory and from the source.
    """

    def __init__(self, source: InstanceDirectory, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._source = source
        self._max_entries = max_entries
        self._views: dict[str, InstanceView | None] = {}
        self._epoch = 0
        self.hits = 0
        self.misses = 0

    async def get(self, instance_id: str, *, fresh: bool = False) -> InstanceView | None:
        """The instance's view, from memory unless `fresh` or not known yet."""
        if not fresh and instance_id in self._views:
            self.hits += 1
            return self._views[instance_id]
        self.misses += 1
        epoch = self._epoch
        view = await self._source.get(instance_id, fresh=True)
        # A forget that ran during the read may have been about this very change: keeping the
        # answer read before it could bring a stale row back. The next get reads again.
        if epoch == self._epoch:
            self._keep(instance_id, view)
        return view

    def _keep(self, instance_id: str, view: InstanceView | None) -> None:
        self._views.pop(instance_id, None)
        if len(self._views) >= self._max_entries:
            del self._views[next(iter(self._views))]
        self._views[instance_id] = view

    def forget(self, instance_id: str) -> None:
        """Drop the entry of one instance (health changed it, or a claim found it stale)."""
        self._epoch += 1
        self._views.pop(instance_id, None)
        self._source.forget(instance_id)

    def clear(self) -> None:
        """Drop every entry."""
        self._epoch += 1
        self._views.clear()

    def __len__(self) -> int:
        return len(self._views)
