"""Hand-written fakes behind the console's ports, recording what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from zapgate.console.ports import ApiRefusedError, ApiUnavailableError, AuditEntry, StateListener
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    InstanceHealth,
    InstanceState,
    InstanceStateChanged,
    InstanceSummary,
    QrCodeReply,
    RestartReply,
)
from zapgate.contracts.sending import SendOutcome, SendStatus, SendSummary
from zapgate.contracts.webhooks import WebhookCount, WebhookCountsReply

QR_IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE="


@dataclass
class FakeHealth:
    """Health's API over a dict of instances; records every call as `(verb, instance_id)`."""

    instances: dict[str, InstanceHealth] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    transitions: dict[str, list[InstanceStateChanged]] = field(default_factory=dict)
    restart_refused_until: datetime | None = None
    restarted_at: datetime | None = None
    """When set, an accepted restart stamps the instance as health would (30-minute cooldown)."""

    def put(self, health: InstanceHealth) -> None:
        self.instances[health.instance_id] = health

    def _known(self, instance_id: str) -> InstanceHealth:
        if instance_id not in self.instances:
            raise ApiRefusedError(Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        return self.instances[instance_id]

    @staticmethod
    def _summary(health: InstanceHealth) -> InstanceSummary:
        return InstanceSummary(
            instance_id=health.instance_id,
            display_name=health.display_name,
            managed=health.managed,
            paused=health.paused,
        )

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]:
        self.calls.append(("health", instance_id))
        if instance_id is None:
            return list(self.instances.values())
        return [self._known(instance_id)]

    async def check_now(self, instance_id: str) -> list[InstanceHealth]:
        self.calls.append(("check_now", instance_id))
        return [self._known(instance_id)]

    async def set_paused(self, instance_id: str, *, paused: bool) -> InstanceSummary:
        self.calls.append(("pause" if paused else "resume", instance_id))
        health = self._known(instance_id).model_copy(update={"paused": paused})
        self.put(health)
        return self._summary(health)

    async def register(
        self, *, instance_id: str, display_name: str, token: str, managed: bool
    ) -> InstanceSummary:
        self.calls.append(("register", instance_id))
        if instance_id in self.instances:
            raise ApiRefusedError(Problem.of(ErrorCode.INSTANCE_EXISTS))
        del token
        self.put(
            InstanceHealth(
                instance_id=instance_id,
                display_name=display_name,
                managed=managed,
                paused=False,
                state=InstanceState.UNKNOWN,
            )
        )
        return self._summary(self.instances[instance_id])

    async def remove(self, instance_id: str) -> InstanceSummary:
        self.calls.append(("remove", instance_id))
        health = self._known(instance_id)
        del self.instances[instance_id]
        return self._summary(health)

    async def restart(self, instance_id: str, *, requested_by: str) -> RestartReply:
        self.calls.append(("restart", instance_id))
        del requested_by
        health = self._known(instance_id)
        if self.restart_refused_until is not None:
            return RestartReply(ok=True, restarted=False, cooldown_until=self.restart_refused_until)
        until = None
        if self.restarted_at is not None:
            until = self.restarted_at + timedelta(minutes=30)
            self.put(
                health.model_copy(
                    update={
                        "last_restart_attempt_at": self.restarted_at,
                        "restart_cooldown_until": until,
                    }
                )
            )
        return RestartReply(
            ok=True, restarted=True, accepted_by_provider=True, cooldown_until=until
        )

    async def qr_code(self, instance_id: str) -> QrCodeReply:
        self.calls.append(("qr_code", instance_id))
        health = self._known(instance_id)
        connected = health.state is InstanceState.CONNECTED
        return QrCodeReply(ok=True, connected=connected, image=None if connected else QR_IMAGE)

    async def pairing_code(self, instance_id: str, phone: str) -> str:
        self.calls.append(("pairing_code", f"{instance_id}:{phone}"))
        self._known(instance_id)
        return "K7QZ-4M2P"

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]:
        self.calls.append(("history", instance_id))
        self._known(instance_id)
        return self.transitions.get(instance_id, [])[:limit]


@dataclass
class FakeAudit:
    """The audit log in a list (newest last)."""

    entries: list[AuditEntry] = field(default_factory=list)

    async def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    async def recent(self, *, limit: int, instance_id: str | None = None) -> list[AuditEntry]:
        chosen = [e for e in self.entries if instance_id is None or e.instance_id == instance_id]
        return list(reversed(chosen))[:limit]


@dataclass
class FakeFeed:
    """A state feed a test triggers by hand with `changed(instance_id)`."""

    listener: StateListener | None = None
    stopped: bool = False

    async def start(self, listener: StateListener) -> None:
        self.listener = listener

    async def stop(self) -> None:
        self.stopped = True

    async def changed(self, instance_id: str) -> None:
        assert self.listener is not None, "feed not started"
        await self.listener(instance_id)


@dataclass
class FakeSender:
    """The sender's API over lists of sends; `retry` records and answers `sent`."""

    by_instance: dict[str, list[SendSummary]] = field(default_factory=dict)
    stuck: dict[str, list[SendSummary]] = field(default_factory=dict)
    retried: list[tuple[str, str]] = field(default_factory=list)
    available: bool = True

    async def sends(
        self, instance_id: str, *, statuses: list[SendStatus], stuck: bool, limit: int
    ) -> list[SendSummary]:
        if not self.available:
            raise ApiUnavailableError("sender")
        source = self.stuck if stuck else self.by_instance
        found = [s for s in source.get(instance_id, []) if not statuses or s.status in statuses]
        return found[:limit]

    async def stuck_counts(self) -> dict[str, int]:
        if not self.available:
            raise ApiUnavailableError("sender")
        return {instance_id: len(sends) for instance_id, sends in self.stuck.items() if sends}

    async def retry(self, command_id: str, new_command_id: str) -> SendOutcome:
        self.retried.append((command_id, new_command_id))
        original = next(
            s for sends in self.by_instance.values() for s in sends if s.command_id == command_id
        )
        return SendOutcome(
            command_id=new_command_id,
            instance_id=original.instance_id,
            phone=original.phone,
            kind=original.kind,
            status=SendStatus.SENT,
            provider_message_id="wamid-retry",
            attempts=1,
            retry_of=command_id,
        )


@dataclass
class FakeIngest:
    """Ingest's read API over a dict of counts per instance."""

    counts: dict[str, list[WebhookCount]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    available: bool = True

    async def webhook_counts(self, instance_id: str) -> WebhookCountsReply:
        self.asked.append(instance_id)
        if not self.available:
            raise ApiUnavailableError("ingest")
        return WebhookCountsReply(
            ok=True, instance_id=instance_id, counts=self.counts.get(instance_id, [])
        )
