"""Every port health's use cases depend on, as Protocols, and the data that crosses them.

Real adapters live in `adapters/` (PostgreSQL, JetStream, the operator webhook, asyncio time);
`tests/fakes.py` holds in-memory fakes of each, so use cases are unit-tested without servers.
`WapiClient` satisfies `SessionProvider` structurally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import SecretStr

from zapgate.contracts.health import (
    InstanceHealth,
    InstanceNotification,
    InstanceState,
    InstanceStateChanged,
    InstanceSummary,
)
from zapgate.health.domain import Decision, Observation, Status
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import ProviderFailure
from zapgate.wapi.results import (
    Acknowledged,
    DeviceInfo,
    InstanceDetails,
    InstanceStatus,
    PairingCode,
    QrCode,
)

HealthEvent = InstanceStateChanged | InstanceNotification


class AlreadyRegisteredError(Exception):
    """`register` without `replace` for an instance id that exists."""


class NotRegisteredError(Exception):
    """The instance id is not in the registry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckTarget:
    """What a check needs to know about one instance (a snapshot of its row)."""

    instance_id: str
    token: str
    managed: bool = True
    state: InstanceState = InstanceState.UNKNOWN
    reason: str | None = None
    since: datetime | None = None
    phone: str | None = None
    phone_observed_at: datetime | None = None

    def credentials(self) -> InstanceCredentials:
        return InstanceCredentials(instance_id=self.instance_id, token=SecretStr(self.token))

    def __repr__(self) -> str:
        # Never let the token reach a log line or a traceback.
        return f"CheckTarget(instance_id={self.instance_id!r}, state={self.state.value!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceRecord:
    """One locked instance as the repository loaded it."""

    instance_id: str
    display_name: str
    managed: bool
    paused: bool
    status: Status


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What the service decided for one instance, for the repository to save.

    `observation` is None for a decision of time alone (an episode settling). `notice_text`
    words the decision's notification; `webhook_target` names the operator URL (a hash) the
    notice is for, None when no URL is configured (then it is never sent).
    """

    record: InstanceRecord
    decision: Decision
    observation: Observation | None = None
    notice_text: str | None = None
    webhook_target: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedNotice:
    """A notice claimed for delivery, with the attempts already made (for the backoff)."""

    notification: InstanceNotification
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceCensus:
    """How many registered instances hold each (state, degraded reason), and how many have an
    open outage episode: the figures behind health's instance gauges."""

    by_state: Mapping[tuple[str, str | None], int]
    open_episodes: int


class LockedInstances(Protocol):
    """Instances loaded and locked for one decision; `save` is written when the block exits."""

    @property
    def records(self) -> Mapping[str, InstanceRecord]: ...

    def save(self, change: Change) -> None: ...


class HealthRepository(Protocol):
    """Health's storage: registry, checks, locked state, restart claims, outbox and notices."""

    async def register(  # noqa: PLR0913 - the registry fields, keyword-only
        self,
        *,
        instance_id: str,
        display_name: str,
        token: str,
        managed: bool,
        replace_existing: bool,
        now: datetime,
    ) -> InstanceSummary:
        """Raises `AlreadyRegisteredError` unless `replace_existing`."""
        ...

    async def set_paused(
        self, instance_id: str, *, paused: bool, now: datetime
    ) -> InstanceSummary: ...

    async def remove(self, instance_id: str) -> InstanceSummary:
        """Delete the instance; its undelivered operator notices are abandoned with it."""
        ...

    async def list_instances(self) -> list[InstanceSummary]: ...

    async def census(self) -> InstanceCensus:
        """Instances by stored (state, reason) and open episodes: one aggregate query."""
        ...

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]: ...

    async def claim_due(self, *, now: datetime, min_gap: timedelta) -> list[CheckTarget]:
        """Stamp and return every unpaused instance (managed or not) not checked within
        `min_gap`; a redelivered tick or another replica finds nothing left."""
        ...

    async def mark_checking(
        self, instance_ids: Sequence[str] | None, *, now: datetime
    ) -> list[CheckTarget]:
        """Targets for a check now: the given ids (even paused), or every unpaused one."""
        ...

    async def target(self, instance_id: str) -> CheckTarget | None: ...

    async def status(self, instance_id: str) -> Status | None:
        """The stored status without a lock (a cheap pre-filter; decide under `locked`)."""
        ...

    def locked(
        self, instance_ids: Sequence[str], *, now: datetime
    ) -> AbstractAsyncContextManager[LockedInstances]:
        """Load and lock these instances (unknown ids are absent) for one transaction."""
        ...

    def settling(
        self, *, now: datetime, settle_window: timedelta
    ) -> AbstractAsyncContextManager[LockedInstances]:
        """Load and lock instances whose open episode has been good for `settle_window`."""
        ...

    async def try_claim_restart(
        self, instance_id: str, *, now: datetime, cooldown: timedelta
    ) -> CheckTarget | None:
        """Compare-and-set on the last restart attempt: one winner per cooldown; managed and
        unpaused instances only."""
        ...

    async def publish_pending(
        self, publish: Callable[[HealthEvent], Awaitable[None]], *, now: datetime
    ) -> tuple[int, int]:
        """Publish stored transitions and notifications not yet published, oldest first;
        return how many of each were published."""
        ...

    async def claim_notices(
        self, *, target: str, now: datetime, lease: timedelta, max_attempts: int, limit: int = 50
    ) -> list[ClaimedNotice]:
        """Claim notices for the operator URL `target` that are due: never delivered, under
        `max_attempts`, past their next attempt and not claimed by anyone else. A claim holds
        for `lease`; whoever holds it is the only sender."""
        ...

    async def record_notice_delivery(
        self,
        event_id: str,
        *,
        delivered: bool,
        attempts: int,
        now: datetime,
        next_attempt_at: datetime | None,
    ) -> None: ...


class SessionProvider(Protocol):
    """The W-API calls health makes (a subset of `zapgate.wapi.port.WapiPort`)."""

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure: ...

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure: ...

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure: ...

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure: ...

    async def qr_code(self, credentials: InstanceCredentials) -> QrCode | ProviderFailure: ...

    async def pairing_code(
        self, credentials: InstanceCredentials, phone_number: str
    ) -> PairingCode | ProviderFailure: ...


class EventPublisher(Protocol):
    """Publishes health's events to JetStream (stream ZG_HEALTH, Nats-Msg-Id = event id)."""

    async def publish(self, event: HealthEvent) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeDelivery:
    """The outcome of delivering one notice (with its in-process retries)."""

    delivered: bool
    attempts: int
    error: str | None = None


class OperatorChannel(Protocol):
    """The operator's webhook URL: signed POSTs of notices."""

    @property
    def target(self) -> str:
        """A stable, non-secret name of the URL (a hash), stored on the notices meant for it."""
        ...

    async def deliver(self, notification: InstanceNotification) -> NoticeDelivery: ...


class Timer(Protocol):
    """Waiting for time to pass (the confirmation delay, backoff). Tests move a clock."""

    async def sleep(self, delay: timedelta) -> None: ...


class OperatorStore(Protocol):
    """The slice of health's repository these verbs use."""

    async def target(self, instance_id: str) -> CheckTarget | None: ...

    async def health(self, instance_id: str | None = None) -> list[InstanceHealth]: ...

    async def try_claim_restart(
        self, instance_id: str, *, now: datetime, cooldown: timedelta
    ) -> CheckTarget | None: ...

    async def history(self, instance_id: str, *, limit: int) -> list[InstanceStateChanged]:
        """The instance's last `limit` state changes, newest first (observed time, then id)."""
        ...


class ReconnectProvider(Protocol):
    """The W-API calls that bring a session back (a subset of `WapiPort`)."""

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure: ...

    async def qr_code(self, credentials: InstanceCredentials) -> QrCode | ProviderFailure: ...

    async def pairing_code(
        self, credentials: InstanceCredentials, phone_number: str
    ) -> PairingCode | ProviderFailure: ...
