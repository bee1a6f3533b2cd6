"""Health's use cases: ticks, checks, observations, restarts, the registry and the outbox.

Plain async code over ports (repository, provider, publisher, clock): the FastStream handlers
in `app.py` only decode messages and call these.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from zapgate.contracts.health import (
    EvidenceSource,
    InstanceHealth,
    InstanceNotification,
    InstanceStateChanged,
    InstanceSummary,
)
from zapgate.health.check import CheckTarget, check_instance
from zapgate.health.domain import Observation, Seen
from zapgate.health.notify import OperatorChannel
from zapgate.health.ports import SessionProvider
from zapgate.health.repository import Applied, HealthRepository
from zapgate.health.settings import HealthSettings
from zapgate.runtime.clock import Clock
from zapgate.wapi.results import Acknowledged

_log = structlog.get_logger("zapgate.health")

HealthEvent = InstanceStateChanged | InstanceNotification


class EventPublisher(Protocol):
    """Publishes health's events to JetStream (stream ZG_HEALTH, Nats-Msg-Id = event id)."""

    async def publish(self, event: HealthEvent) -> None: ...


@dataclass(slots=True)
class RoundReport:
    """What one round of checks (a tick or a check-now) did."""

    checked: int = 0
    transitions: int = 0
    restarts: int = 0
    applied: list[Applied] = field(default_factory=list)


class HealthService:
    """The use cases, wired to their ports once in `create_app`."""

    def __init__(  # noqa: PLR0913 - the composition root hands in each port by name
        self,
        *,
        repository: HealthRepository,
        provider: SessionProvider,
        publisher: EventPublisher,
        clock: Clock,
        settings: HealthSettings,
        operator: OperatorChannel | None = None,
        on_tick: Callable[[RoundReport], None] | None = None,
    ) -> None:
        self.repository = repository
        self._provider = provider
        self._publisher = publisher
        self._clock = clock
        self._settings = settings
        self._operator = operator
        self._on_tick = on_tick
        self._restart_slots = asyncio.Semaphore(settings.provider_concurrency)

    # --- rounds of checks --------------------------------------------------------------------

    async def tick(self, heartbeat: Callable[[], Awaitable[None]] | None = None) -> RoundReport:
        """Check every managed, unpaused instance not checked within the minimum gap."""
        started = time.perf_counter()
        targets = await self.repository.claim_due(
            now=self._clock.now(), min_gap=self._settings.effective_check_min_gap
        )
        report = await self._check_all(targets, EvidenceSource.TICK, heartbeat=heartbeat)
        await self.flush_outbox()
        _log.info(
            "health tick",
            checked=report.checked,
            transitions=report.transitions,
            restarts=report.restarts,
            duration_s=round(time.perf_counter() - started, 3),
        )
        if self._on_tick is not None:
            self._on_tick(report)
        return report

    async def check_now(self, instance_id: str | None = None) -> list[InstanceHealth]:
        """Check one instance (registered, even if paused) or every managed one, right now."""
        ids = [instance_id] if instance_id is not None else None
        targets = await self.repository.mark_checking(ids, now=self._clock.now())
        report = await self._check_all(targets, EvidenceSource.CHECK_NOW)
        await self.flush_outbox()
        _log.info(
            "check now",
            instance_id=instance_id,
            checked=report.checked,
            transitions=report.transitions,
            restarts=report.restarts,
        )
        checked = {target.instance_id for target in targets}
        return [h for h in await self.repository.health(instance_id) if h.instance_id in checked]

    async def _check_all(
        self,
        targets: Sequence[CheckTarget],
        source: EvidenceSource,
        *,
        force_phone_lookup: bool = False,
        heartbeat: Callable[[], Awaitable[None]] | None = None,
    ) -> RoundReport:
        report = RoundReport()
        pending = iter(targets)
        results: asyncio.Queue[tuple[str, Observation] | None] = asyncio.Queue()

        async def checker() -> None:
            # `concurrency` workers share one iterator: bounded calls towards the provider.
            for target in pending:
                observation = await self._observe_safely(
                    target, source, force_phone_lookup=force_phone_lookup
                )
                results.put_nowait((target.instance_id, observation))

        async def writer() -> None:
            done = False
            while not done:
                item = await results.get()
                batch: list[tuple[str, Observation]] = []
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self._settings.apply_batch_size or results.empty():
                        break
                    item = results.get_nowait()
                done = item is None
                if batch:
                    await self._apply(batch, report)
                    if heartbeat is not None:
                        await heartbeat()

        workers = min(self._settings.provider_concurrency, max(len(targets), 1))
        async with asyncio.TaskGroup() as group:
            write = group.create_task(writer())
            async with asyncio.TaskGroup() as checks:
                for _ in range(workers):
                    checks.create_task(checker())
            results.put_nowait(None)
            await write
        return report

    async def _observe_safely(
        self, target: CheckTarget, source: EvidenceSource, *, force_phone_lookup: bool
    ) -> Observation:
        try:
            return await check_instance(
                self._provider,
                target,
                now=self._clock.now(),
                source=source,
                phone_max_age=self._settings.phone_max_age,
                force_phone_lookup=force_phone_lookup,
            )
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop the round
            _log.exception("check failed", instance_id=target.instance_id)
            return Observation(
                seen=Seen.UNREACHABLE,
                source=source,
                observed_at=self._clock.now(),
                detail=f"check raised {type(exc).__name__}",
            )

    # --- observations from other services ----------------------------------------------------

    async def observe(self, instance_id: str, observation: Observation) -> Applied | None:
        """Apply one observation; verify a claim when the state machine asks for it."""
        report = RoundReport()
        await self._apply([(instance_id, observation)], report)
        await self.flush_outbox()
        if not report.applied:
            _log.info(
                "observation for unknown instance ignored",
                instance_id=instance_id,
                seen=observation.seen.value,
                source=observation.source.value,
            )
            return None
        return report.applied[0]

    async def reconnect_requested(self, instance_id: str, requested_by: str) -> None:
        """Someone saw the session down: check it now; a disconnected result restarts it
        (under the cooldown)."""
        target = await self.repository.target(instance_id)
        if target is None:
            _log.info("reconnect request for unknown instance", instance_id=instance_id)
            return
        _log.info("reconnect requested", instance_id=instance_id, requested_by=requested_by)
        report = await self._check_all([target], EvidenceSource.CHECK_NOW)
        await self.flush_outbox()
        del report

    # --- applying decisions ------------------------------------------------------------------

    async def _apply(self, batch: list[tuple[str, Observation]], report: RoundReport) -> None:
        applied = await self.repository.apply(batch, now=self._clock.now())
        report.checked += len(batch)
        report.applied.extend(applied)
        verify: list[Applied] = []
        restart: list[Applied] = []
        for item in applied:
            decision = item.decision
            if decision.transition is not None:
                report.transitions += 1
                _log_transition(item)
            elif decision.ignored is not None:
                _log.info(
                    "observation ignored",
                    instance_id=item.instance_id,
                    seen=item.observation.seen.value,
                    source=item.observation.source.value,
                    why=decision.ignored.value,
                    observed_at=item.observation.observed_at.isoformat(),
                )
            if decision.restart_wanted:
                restart.append(item)
            if decision.verify_wanted:
                verify.append(item)
        # Side by side, bounded like the checks: a mass outage must not make a tick take
        # one provider round trip per disconnected instance.
        restarted = await asyncio.gather(*(self._restart(item) for item in restart))
        report.restarts += sum(restarted)
        for item in verify:
            await self._verify(item)

    async def _verify(self, item: Applied) -> None:
        target = await self.repository.target(item.instance_id)
        if target is None:
            return
        _log.info(
            "verifying a connected claim with fetch-instance",
            instance_id=item.instance_id,
            source=item.observation.source.value,
        )
        observation = await self._observe_safely(
            target, item.observation.source, force_phone_lookup=True
        )
        if observation.seen is Seen.CONNECTED_CLAIM:  # pragma: no cover - checks never claim
            return
        await self._apply([(item.instance_id, observation)], RoundReport())

    async def _restart(self, item: Applied) -> bool:
        if not item.managed or item.paused:
            _log.info(
                "restart skipped",
                instance_id=item.instance_id,
                why="paused" if item.paused else "not managed",
            )
            return False
        # Claim and call under one slot: a crash leaves at most `provider_concurrency` claims
        # without their call (those instances wait for the cooldown).
        async with self._restart_slots:
            return await self._claim_and_restart(item)

    async def _claim_and_restart(self, item: Applied) -> bool:
        now = self._clock.now()
        target = await self.repository.try_claim_restart(
            item.instance_id, now=now, cooldown=self._settings.restart_cooldown
        )
        if target is None:
            _log.info(
                "restart skipped",
                instance_id=item.instance_id,
                why="cooldown",
                cooldown_s=self._settings.restart_cooldown.total_seconds(),
            )
            return False
        result = await self._provider.restart(target.credentials())
        if isinstance(result, Acknowledged):
            _log.info("restart requested", instance_id=item.instance_id, outcome="accepted")
        else:
            _log.warning(
                "restart requested",
                instance_id=item.instance_id,
                outcome="failed",
                code=result.code,
                detail=result.detail,
            )
        return True

    # --- outbox ------------------------------------------------------------------------------

    async def flush_outbox(self) -> None:
        """Publish stored transitions and notifications not yet published; deliver to the
        operator webhook. Failures stay stored and are retried on the next flush."""
        try:
            # Drain: a tick over thousands of instances may store more than one page.
            publish = self._publisher.publish
            while any(await self.repository.publish_pending(publish, now=self._clock.now())):
                pass
        except Exception:  # noqa: BLE001 - the rows stay unpublished; the next flush retries
            _log.exception("publishing health events failed; will retry on the next flush")
        if self._operator is not None:
            await self._deliver_to_operator(self._operator)

    async def _deliver_to_operator(self, operator: OperatorChannel) -> None:
        pending = await self.repository.undelivered_notifications(
            max_attempts=self._settings.operator_webhook_attempts
        )
        for notification in pending:
            delivered, attempts = await operator.deliver(notification)
            await self.repository.record_webhook_delivery(
                str(notification.event_id),
                delivered=delivered,
                attempts=attempts,
                now=self._clock.now(),
            )

    # --- registry ----------------------------------------------------------------------------

    async def register(
        self, *, instance_id: str, display_name: str, token: str, managed: bool, replace: bool
    ) -> InstanceSummary:
        summary = await self.repository.register(
            instance_id=instance_id,
            display_name=display_name,
            token=token,
            managed=managed,
            replace_existing=replace,
            now=self._clock.now(),
        )
        _log.info("instance registered", instance_id=instance_id, managed=managed, replace=replace)
        return summary

    async def set_paused(self, instance_id: str, *, paused: bool) -> InstanceSummary:
        summary = await self.repository.set_paused(
            instance_id, paused=paused, now=self._clock.now()
        )
        _log.info("instance paused" if paused else "instance resumed", instance_id=instance_id)
        return summary

    async def remove(self, instance_id: str) -> InstanceSummary:
        summary = await self.repository.remove(instance_id)
        _log.info("instance removed", instance_id=instance_id)
        return summary


def _log_transition(item: Applied) -> None:
    transition = item.decision.transition
    if transition is None:  # pragma: no cover - caller checked
        return
    _log.info(
        "instance state changed",
        instance_id=item.instance_id,
        from_state=transition.from_state.value,
        from_reason=transition.from_reason,
        to_state=transition.to_state.value,
        reason=transition.reason,
        source=item.observation.source.value,
        observed_at=item.observation.observed_at.isoformat(),
        detail=item.observation.detail,
        notification=(
            item.decision.notification.kind.value if item.decision.notification else None
        ),
    )
