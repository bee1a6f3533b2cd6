"""Health's use cases: rounds of checks, evidence from other services, confirmations, restarts,
episodes settling, the registry, and the outboxes (events and operator notices).

Plain async code over the ports in `ports.py`. The repository locks and loads; `domain` decides;
the repository saves; then this module carries out what the decision wants (confirm, verify,
restart). Handlers in `handlers.py` only decode messages and call these.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceHealth,
    InstanceSummary,
)
from zapgate.health.adapters.metrics import HealthMetrics
from zapgate.health.check import check_instance
from zapgate.health.domain import (
    Decision,
    Observation,
    Seen,
    Status,
    apply_observation,
    settle,
    stall_recheck_due,
)
from zapgate.health.ports import (
    Change,
    CheckTarget,
    EventPublisher,
    HealthRepository,
    InstanceRecord,
    OperatorChannel,
    SessionProvider,
    Timer,
)
from zapgate.health.settings import HealthSettings
from zapgate.health.texts import notification_text
from zapgate.runtime.clock import Clock
from zapgate.wapi.results import Acknowledged

_log = structlog.get_logger("zapgate.health")

NOTICE_LEASE = timedelta(minutes=5)
"""How long a claimed operator notice is reserved for its sender (longer than one round)."""
_MAX_ROUND_WAIT = timedelta(hours=1)


@dataclass(slots=True)
class RoundReport:
    """What one round of checks (a tick, a check-now, a confirmation) did."""

    checked: int = 0
    transitions: int = 0
    restarts: int = 0
    blips: int = 0
    confirmations: int = 0
    notices: int = 0
    changes: list[Change] = field(default_factory=list)


class HealthService:
    """The use cases, wired to their ports once in `create_app`."""

    def __init__(  # noqa: PLR0913 - the composition root hands in each port by name
        self,
        *,
        repository: HealthRepository,
        provider: SessionProvider,
        publisher: EventPublisher,
        clock: Clock,
        timer: Timer,
        settings: HealthSettings,
        operator: OperatorChannel | None = None,
        on_tick: Callable[[RoundReport], None] | None = None,
        metrics: HealthMetrics | None = None,
    ) -> None:
        self.repository = repository
        self._provider = provider
        self._publisher = publisher
        self._clock = clock
        self._timer = timer
        self._settings = settings
        self._policy = settings.policy
        self._operator = operator
        self._on_tick = on_tick
        self._metrics = metrics or HealthMetrics.for_registry()
        self._restart_slots = asyncio.Semaphore(settings.provider_concurrency)

    # --- rounds of checks --------------------------------------------------------------------

    async def tick(self) -> RoundReport:
        """Check every unpaused instance (managed or not) not checked within the minimum gap;
        confirm suspicions; settle episodes that stayed good; flush the outboxes."""
        started = time.perf_counter()
        targets = await self.repository.claim_due(
            now=self._clock.now(), min_gap=self._settings.effective_check_min_gap
        )
        report = await self._round(targets, EvidenceSource.TICK)
        await self._settle_episodes(report)
        await self.flush_outbox()
        try:
            self._metrics.census(await self.repository.census())
        except Exception as exc:  # noqa: BLE001 - a gauge must never fail the tick
            # The gauges keep their last values.
            _log.warning("instance_census_failed", reason=repr(exc))
        self._metrics.tick_duration.observe(time.perf_counter() - started)
        _log.info(
            "health_tick",
            checked=report.checked,
            transitions=report.transitions,
            restarts=report.restarts,
            blips=report.blips,
            confirmations=report.confirmations,
            duration_s=round(time.perf_counter() - started, 3),
        )
        if self._on_tick is not None:
            self._on_tick(report)
        return report

    async def check_now(self, instance_id: str | None = None) -> list[InstanceHealth]:
        """Check one instance (registered, even if paused) or every unpaused one, right now."""
        ids = [instance_id] if instance_id is not None else None
        targets = await self.repository.mark_checking(ids, now=self._clock.now())
        report = await self._round(targets, EvidenceSource.CHECK_NOW)
        await self.flush_outbox()
        _log.info(
            "check_now",
            instance_id=instance_id,
            checked=report.checked,
            transitions=report.transitions,
            restarts=report.restarts,
        )
        checked = {target.instance_id for target in targets}
        return [h for h in await self.health(instance_id) if h.instance_id in checked]

    async def _round(self, targets: Sequence[CheckTarget], source: EvidenceSource) -> RoundReport:
        """Check, decide, restart; then confirm the suspicions once after the confirm delay."""
        report = RoundReport()
        first = await self._check_all(targets, source, report)
        await self._follow_up(first, report, confirm_after=self._settings.confirm_delay)
        return report

    async def _check_all(
        self,
        targets: Sequence[CheckTarget],
        source: EvidenceSource,
        report: RoundReport,
        *,
        confirming: bool = False,
        force_phone_lookup: bool = False,
    ) -> list[Change]:
        """Bounded concurrent checks (`provider_concurrency` at once); results decided and
        saved in batches: one transaction per batch of instances, never one per instance.

        A batch is written when it holds `apply_batch_size` results, when every check of the
        round is done, or when its oldest result has waited `apply_batch_linger` (so a hung
        check never holds the others' news). While a batch is written, results of the checks
        that go on accumulate for the next one.
        """
        pending = iter(targets)
        results: asyncio.Queue[tuple[str, Observation] | None] = asyncio.Queue()
        changes: list[Change] = []

        async def checker() -> None:
            for target in pending:
                observation = await self._look(
                    target, source, confirming=confirming, force=force_phone_lookup
                )
                results.put_nowait((target.instance_id, observation))

        async def writer() -> None:
            batches = _batches(
                results,
                size=self._settings.apply_batch_size,
                linger=self._settings.apply_batch_linger.total_seconds(),
            )
            async for batch in batches:
                decided = await self._decide(batch, report)
                changes.extend(decided)
                await self._restart_all(decided, report)

        workers = min(self._settings.provider_concurrency, max(len(targets), 1))
        async with asyncio.TaskGroup() as group:
            writing = group.create_task(writer())
            async with asyncio.TaskGroup() as checks:
                for _ in range(workers):
                    checks.create_task(checker())
            results.put_nowait(None)
            await writing
        return changes

    async def _look(
        self, target: CheckTarget, source: EvidenceSource, *, confirming: bool, force: bool
    ) -> Observation:
        now = self._clock.now()
        force = force or confirming
        if not force and target.reason == DegradedReason.DELIVERY_STALLED.value:
            stalled = Status(state=target.state, reason=target.reason, since=target.since)
            force = stall_recheck_due(stalled, now=now, policy=self._policy)
        try:
            return await check_instance(
                self._provider,
                target,
                now=now,
                source=source,
                phone_max_age=self._settings.phone_max_age,
                force_phone_lookup=force,
                confirming=confirming,
            )
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop the round
            _log.exception("check_failed", instance_id=target.instance_id)
            return Observation(
                seen=Seen.UNREACHABLE,
                source=source,
                observed_at=now,
                live=True,
                confirming=confirming,
                detail=f"check raised {type(exc).__name__}",
            )

    # --- deciding ----------------------------------------------------------------------------

    async def _decide(
        self, batch: Sequence[tuple[str, Observation]], report: RoundReport
    ) -> list[Change]:
        """Lock and load, decide each observation in order, save: one transaction."""
        now = self._clock.now()
        changes: list[Change] = []
        async with self.repository.locked([i for i, _ in batch], now=now) as unit:
            statuses = {i: record.status for i, record in unit.records.items()}
            for instance_id, observation in batch:
                record = unit.records.get(instance_id)
                if record is None:
                    continue
                before = statuses[instance_id]
                decision = apply_observation(before, observation, now=now, policy=self._policy)
                statuses[instance_id] = decision.status
                if before is not record.status:  # a second observation of it in this batch
                    record = replace(record, status=before)
                change = self._change(record, decision, observation)
                unit.save(change)
                changes.append(change)
        report.checked += len(batch)
        for change in changes:
            _count_and_log(change, report)
            self._metrics.changed(change, now)
        report.changes.extend(changes)
        return changes

    def _change(
        self,
        record: InstanceRecord,
        decision: Decision,
        observation: Observation | None,
    ) -> Change:
        intent = decision.notification
        text = None
        if intent is not None:
            text = notification_text(
                intent.kind,
                display_name=record.display_name,
                instance_id=record.instance_id,
                state=intent.state,
                reason=intent.reason,
                since=intent.since,
                flaps=intent.flaps,
            )
        return Change(
            record=record,
            decision=decision,
            observation=observation,
            notice_text=text,
            webhook_target=self._operator.target if self._operator is not None else None,
        )

    async def _follow_up(
        self, changes: Sequence[Change], report: RoundReport, *, confirm_after: timedelta
    ) -> None:
        """Confirm suspicions (after `confirm_after`) and verify claims with live checks."""
        confirm = [c for c in changes if c.decision.confirm_wanted]
        verify = [c for c in changes if c.decision.verify_wanted]
        if confirm:
            if confirm_after > timedelta(0):
                await self._timer.sleep(confirm_after)
            by_source: dict[EvidenceSource, list[str]] = {}
            for change in confirm:
                source = change.observation.source if change.observation else EvidenceSource.TICK
                by_source.setdefault(source, []).append(change.record.instance_id)
            for source, ids in by_source.items():
                targets = await self._targets(ids)
                report.confirmations += len(targets)
                await self._check_all(targets, source, report, confirming=True)
        for change in verify:
            _log.info(
                "connected_claim_verifying",
                check="fetch-instance",
                instance_id=change.record.instance_id,
                source=change.observation.source.value if change.observation else None,
            )
            targets = await self._targets([change.record.instance_id])
            source = change.observation.source if change.observation else EvidenceSource.TICK
            await self._check_all(targets, source, report, force_phone_lookup=True)

    async def _targets(self, instance_ids: Sequence[str]) -> list[CheckTarget]:
        found = [await self.repository.target(i) for i in instance_ids]
        return [target for target in found if target is not None]

    # --- evidence from other services --------------------------------------------------------

    async def observe(self, instance_id: str, observation: Observation) -> Change | None:
        """Apply one piece of outside evidence. A suspicion it raises is confirmed by a live
        check at once (the evidence itself was the first look); a claim is verified."""
        report = RoundReport()
        changes = await self._decide([(instance_id, observation)], report)
        if not changes:
            _log.info(
                "observation_for_unknown_instance_ignored",
                instance_id=instance_id,
                seen=observation.seen.value,
                source=observation.source.value,
            )
            return None
        await self._restart_all(changes, report)
        await self._follow_up(
            changes,
            report,
            confirm_after=self._settings.confirm_delay if observation.live else timedelta(0),
        )
        await self.flush_outbox()
        return changes[0]

    async def delivery_evidence(self, instance_id: str, observation: Observation) -> None:
        """A receipt for one of the instance's messages: lifts a delivery stall that began
        before it was received. Cheap when the instance is not stalled (no lock taken)."""
        status = await self.repository.status(instance_id)
        if status is None or not status.stalled:
            return
        await self.observe(instance_id, observation)

    async def reconnect_requested(self, instance_id: str, requested_by: str) -> None:
        """Someone saw the session down: check it now (a drop is confirmed, then restarted)."""
        target = await self.repository.target(instance_id)
        if target is None:
            _log.info("reconnect_request_for_unknown_instance", instance_id=instance_id)
            return
        _log.info("reconnect_requested", instance_id=instance_id, requested_by=requested_by)
        await self._round([target], EvidenceSource.CHECK_NOW)
        await self.flush_outbox()

    # --- episodes ----------------------------------------------------------------------------

    async def _settle_episodes(self, report: RoundReport) -> None:
        now = self._clock.now()
        async with self.repository.settling(
            now=now, settle_window=self._settings.settle_window
        ) as unit:
            for record in unit.records.values():
                decision = settle(record.status, now=now, policy=self._policy)
                if decision.status == record.status:
                    continue
                change = self._change(record, decision, None)
                unit.save(change)
                report.changes.append(change)
                _count_and_log(change, report)
                self._metrics.changed(change, now)

    # --- restarts ----------------------------------------------------------------------------

    async def _restart_all(self, changes: Sequence[Change], report: RoundReport) -> None:
        # Side by side, bounded like the checks: a mass outage must not make a tick take one
        # provider round trip per disconnected instance.
        wanted = [c for c in changes if c.decision.restart_wanted]
        restarted = await asyncio.gather(*(self._restart(c.record) for c in wanted))
        report.restarts += sum(restarted)

    async def _restart(self, record: InstanceRecord) -> bool:
        if not record.managed or record.paused:
            _log.info(
                "restart_skipped",
                instance_id=record.instance_id,
                why="paused" if record.paused else "not managed",
            )
            return False
        # Claim and call under one slot: a crash leaves at most `provider_concurrency` claims
        # without their call (those instances wait for the cooldown).
        async with self._restart_slots:
            target = await self.repository.try_claim_restart(
                record.instance_id,
                now=self._clock.now(),
                cooldown=self._settings.restart_cooldown,
            )
            if target is None:
                _log.info(
                    "restart_skipped",
                    instance_id=record.instance_id,
                    why="cooldown",
                    cooldown_s=self._settings.restart_cooldown.total_seconds(),
                )
                return False
            result = await self._provider.restart(target.credentials())
        self._metrics.restarts.labels(
            "accepted" if isinstance(result, Acknowledged) else "failed"
        ).inc()
        if isinstance(result, Acknowledged):
            _log.info(
                "restart_requested",
                instance_id=record.instance_id,
                why="confirmed disconnected",
                outcome="accepted",
            )
        else:
            _log.warning(
                "restart_requested",
                instance_id=record.instance_id,
                why="confirmed disconnected",
                outcome="failed",
                code=result.code,
                detail=result.detail,
            )
        return True

    # --- outboxes ----------------------------------------------------------------------------

    async def flush_outbox(self) -> None:
        """Publish stored transitions and notifications not yet published; deliver due notices
        to the operator webhook. Failures stay stored and are retried later."""
        try:
            # Drain: a tick over thousands of instances may store more than one page.
            publish = self._publisher.publish
            while any(await self.repository.publish_pending(publish, now=self._clock.now())):
                pass
        except Exception:  # noqa: BLE001 - the rows stay unpublished; the next flush retries
            _log.exception("health_events_publish_failed", then="retried on the next flush")
        if self._operator is not None:
            await self._deliver_notices(self._operator)

    async def _deliver_notices(self, operator: OperatorChannel) -> None:
        claimed = await self.repository.claim_notices(
            target=operator.target,
            now=self._clock.now(),
            lease=NOTICE_LEASE,
            max_attempts=self._settings.operator_webhook_max_attempts,
        )
        for notice in claimed:
            result = await operator.deliver(notice.notification)
            now = self._clock.now()
            attempts = notice.attempts + result.attempts
            next_at = None if result.delivered else now + self._next_round(attempts)
            if not result.delivered:
                gave_up = attempts >= self._settings.operator_webhook_max_attempts
                _log.warning(
                    "operator_notice_delivery_failed",
                    instance_id=notice.notification.instance_id,
                    notification_id=str(notice.notification.event_id),
                    attempts=attempts,
                    why=result.error,
                    next_attempt_at=None if gave_up or next_at is None else next_at.isoformat(),
                    gave_up=gave_up,
                )
            await self.repository.record_notice_delivery(
                str(notice.notification.event_id),
                delivered=result.delivered,
                attempts=result.attempts,
                now=now,
                next_attempt_at=next_at,
            )

    def _next_round(self, attempts: int) -> timedelta:
        rounds = max(attempts // self._settings.operator_webhook_attempts, 1)
        wait: timedelta = self._settings.operator_webhook_retry_after * (2 ** (rounds - 1))
        return min(wait, _MAX_ROUND_WAIT)

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
        _log.info("instance_registered", instance_id=instance_id, managed=managed, replace=replace)
        return summary

    async def set_paused(self, instance_id: str, *, paused: bool) -> InstanceSummary:
        summary = await self.repository.set_paused(
            instance_id, paused=paused, now=self._clock.now()
        )
        _log.info("instance_paused" if paused else "instance_resumed", instance_id=instance_id)
        return summary

    async def remove(self, instance_id: str) -> InstanceSummary:
        summary = await self.repository.remove(instance_id)
        _log.info("instance_removed", instance_id=instance_id, why="operator")
        return summary

    async def list_instances(self) -> list[InstanceSummary]:
        return await self.repository.list_instances()

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        """The read model of one instance (or all), with the restart cooldown by this clock."""
        found = await self.repository.health(instance_id)
        now = self._clock.now()
        return [with_restart_cooldown(h, self._settings.restart_cooldown, now) for h in found]


def with_restart_cooldown(
    health: InstanceHealth, cooldown: timedelta, now: datetime
) -> InstanceHealth:
    """`health` with `restart_cooldown_until` (last restart attempt + `cooldown`) and the
    seconds of it left at `now` (0 once over, or without any attempt)."""
    last = health.last_restart_attempt_at
    if last is None:
        return health
    until = last + cooldown
    left = max((until - now).total_seconds(), 0.0)
    return health.model_copy(
        update={"restart_cooldown_until": until, "restart_cooldown_left_s": left}
    )


async def _batches(
    results: asyncio.Queue[tuple[str, Observation] | None],
    *,
    size: int,
    linger: float,
) -> AsyncIterator[list[tuple[str, Observation]]]:
    """Check results from `results` (None ends them) in batches of at most `size`: a batch is
    handed on when full, at the end, or when its oldest result has waited `linger` seconds with
    no batch-filling arrivals (a hung check must not hold the others' news). The linger is real
    time, like the provider call timeouts: it bounds latency and decides nothing. Results that
    arrive while the consumer writes a batch wait in the queue and join the next one."""
    loop = asyncio.get_running_loop()
    batch: list[tuple[str, Observation]] = []
    opened = 0.0
    while True:
        if batch:
            try:
                async with asyncio.timeout(max(linger - (loop.time() - opened), 0.0)):
                    item = await results.get()
            except TimeoutError:
                yield batch
                batch = []
                continue
        else:
            item = await results.get()
            opened = loop.time()
        if item is None:
            break
        batch.append(item)
        while len(batch) < size and not results.empty():
            more = results.get_nowait()
            if more is None:
                results.put_nowait(None)  # seen again at the top, which ends the batches
                break
            batch.append(more)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_and_log(change: Change, report: RoundReport) -> None:
    decision = change.decision
    observation = change.observation
    instance_id = change.record.instance_id
    seen = observation.seen.value if observation else None
    source = observation.source.value if observation else None
    if decision.transition is not None:
        report.transitions += 1
        transition = decision.transition
        _log.info(
            "instance_state_changed",
            instance_id=instance_id,
            from_state=transition.from_state.value,
            from_reason=transition.from_reason,
            to_state=transition.to_state.value,
            reason=transition.reason,
            source=source,
            confirmed=bool(observation and observation.confirming),
            observed_at=observation.observed_at.isoformat() if observation else None,
            provider_moment=(
                observation.provider_moment.isoformat()
                if observation and observation.provider_moment
                else None
            ),
            detail=observation.detail if observation else None,
            flaps=decision.status.flaps,
        )
    elif decision.confirm_wanted:
        _log.info(
            "outage_suspected",
            instance_id=instance_id,
            seen=seen,
            source=source,
            why="a connected instance looked bad once",
            then="confirming with a live check",
            detail=observation.detail if observation else None,
        )
    elif decision.ignored is not None:
        _log.info(
            "observation_ignored",
            instance_id=instance_id,
            seen=seen,
            source=source,
            why=decision.ignored.value,
            observed_at=observation.observed_at.isoformat() if observation else None,
        )
    if decision.blip:
        report.blips += 1
        _log.info(
            "check_blip",
            instance_id=instance_id,
            why="the confirming check found the session good",
            blips=decision.status.blips,
        )
    if decision.notification is not None:
        report.notices += 1
        _log.info(
            "notice_queued",
            instance_id=instance_id,
            kind=decision.notification.kind.value,
            why=_notice_reason(change),
            flaps=decision.notification.flaps,
        )


def _notice_reason(change: Change) -> str:
    intent = change.decision.notification
    if intent is None:  # pragma: no cover - caller checked
        return ""
    return {
        "outage": "an outage episode opened",
        "unstable": "flaps in the episode reached the threshold",
        "recovered": "the session stayed good for the settle window",
    }.get(intent.kind.value, intent.kind.value)
