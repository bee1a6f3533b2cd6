"""In-memory fakes of every port of the sender, recording what happened.

They keep the real adapters' rules that use cases rely on: `claim` inserts once, `move` is a
compare-and-set on the status, the publisher dedupes on `msg_id` like a stream does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from zapgate.contracts import subjects
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import SendOutcome
from zapgate.runtime.clock import ManualClock
from zapgate.sender.domain import InstanceView, LiveSession, StuckMessage
from zapgate.sender.lanes import Pacer
from zapgate.sender.ports import Claim, InstanceStuck, StoreUnavailableError
from zapgate.sender.service import SenderDeps, SendPolicy
from zapgate.sender.tables import RowStatus, SendCommandRow
from zapgate.wapi.results import SendAccepted

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from zapgate.contracts.envelope import Envelope
    from zapgate.contracts.sending import ListSends, MessageBody, SendMessage, SendSummary
    from zapgate.sender.domain import EarlyReceipt
    from zapgate.wapi.failures import ProviderFailure

_TIME_COLUMN = {
    RowStatus.HELD: "held_at",
    RowStatus.SENDING: "sending_at",
    RowStatus.SENT: "sent_at",
    RowStatus.DELIVERED: "delivered_at",
    RowStatus.READ: "read_at",
    RowStatus.PLAYED: "played_at",
    RowStatus.FAILED: "failed_at",
    RowStatus.UNCERTAIN: "uncertain_at",
}


class FakeCommandStore:
    """`CommandStore` in dicts. `fail_next = n`: the next n calls fail as
    a database outage would."""

    def __init__(self) -> None:
        self.rows: dict[str, SendCommandRow] = {}
        self.stalls: dict[str, tuple[list[str], datetime | None]] = {}
        self.early: dict[tuple[str, str], EarlyReceipt] = {}
        self.stalled_at: dict[str, datetime] = {}
        self.fail_next = 0
        self.refused = 0

    def _check(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused += 1
            raise StoreUnavailableError("fake database down")

    async def claim(
        self,
        command: SendMessage,
        now: datetime,
        *,
        sending: bool = False,
        session_health: str | None = None,
    ) -> Claim:
        self._check()
        existing = self.rows.get(command.command_id)
        if existing is not None:
            return Claim(new=False, row=existing.model_copy())
        row = SendCommandRow(
            command_id=command.command_id,
            instance_id=command.instance_id,
            phone=command.phone,
            kind=command.body.kind.value,
            body=command.body.model_dump(mode="json"),
            quoted_message_id=command.quoted_message_id,
            delay_message=command.delay_message,
            correlation_id=command.correlation_id,
            status=(RowStatus.SENDING if sending else RowStatus.CLAIMED).value,
            attempts=0,
            retry_of=command.retry_of,
            hold_until=now + command.hold_for if command.hold_for > timedelta(0) else None,
            created_at=now,
            updated_at=now,
            sending_at=now if sending else None,
            session_health=session_health if sending else None,
        )
        self.rows[row.command_id] = row
        return Claim(new=True, row=row.model_copy())

    async def claim_sending(
        self,
        command: SendMessage,
        now: datetime,
        *,
        session_health: str | None,
        view_version: str | None,
    ) -> Claim | None:
        """The fakes' directory gives no `version`: nothing to re-check."""
        del view_version
        return await self.claim(command, now, sending=True, session_health=session_health)

    async def get(self, command_id: str) -> SendCommandRow | None:
        self._check()
        row = self.rows.get(command_id)
        return row.model_copy() if row is not None else None

    async def move(
        self,
        command_id: str,
        *,
        from_statuses: Collection[RowStatus],
        to: RowStatus,
        now: datetime,
        **values: Any,
    ) -> SendCommandRow | None:
        self._check()
        row = self.rows.get(command_id)
        if row is None or row.status not in {status.value for status in from_statuses}:
            return None
        changes: dict[str, Any] = {"status": to.value, "updated_at": now, **values}
        column = _TIME_COLUMN.get(to)
        if column is not None and column not in changes:
            changes[column] = now
        for name, value in changes.items():
            setattr(row, name, value)
        return row.model_copy()

    async def by_provider_message_id(self, message_id: str) -> SendCommandRow | None:
        self._check()
        for row in self.rows.values():
            if row.provider_message_id == message_id:
                return row.model_copy()
        return None

    async def held(self, instance_id: str | None = None) -> list[SendCommandRow]:
        self._check()
        rows = [
            row
            for row in self.rows.values()
            if row.status == RowStatus.HELD.value
            and (instance_id is None or row.instance_id == instance_id)
        ]
        return [row.model_copy() for row in sorted(rows, key=lambda row: row.created_at)]

    async def unalerted_stuck(self, sent_before: datetime) -> list[SendCommandRow]:
        self._check()
        return [
            row.model_copy()
            for row in self.rows.values()
            if row.status == RowStatus.SENT.value
            and row.sent_at is not None
            and row.sent_at < sent_before
            and row.stuck_alerted_at is None
        ]

    async def mark_stuck_alerted(self, command_id: str, now: datetime) -> bool:
        self._check()
        row = self.rows[command_id]
        if row.stuck_alerted_at is not None:
            return False
        row.stuck_alerted_at = now
        return True

    async def stuck_by_instance(
        self, sent_before: datetime, sent_after: datetime
    ) -> list[InstanceStuck]:
        self._check()
        grouped: dict[str, list[StuckMessage]] = {}
        for row in self.rows.values():
            if (
                row.status == RowStatus.SENT.value
                and row.sent_at is not None
                and sent_after <= row.sent_at < sent_before
            ):
                grouped.setdefault(row.instance_id, []).append(
                    StuckMessage(command_id=row.command_id, sent_at=row.sent_at)
                )
        result = []
        for instance_id, stuck in grouped.items():
            delivered = [
                row.delivered_at
                for row in self.rows.values()
                if row.instance_id == instance_id and row.delivered_at is not None
            ]
            result.append(InstanceStuck(instance_id, stuck, max(delivered, default=None)))
        return result

    async def open_stall(self, instance_id: str, message_ids: list[str], now: datetime) -> bool:
        self._check()
        current = self.stalls.get(instance_id)
        if current is not None and current[1] is None:
            return False
        self.stalls[instance_id] = (message_ids, None)
        self.stalled_at[instance_id] = now
        return True

    async def close_stall(self, instance_id: str, now: datetime) -> list[str] | None:
        self._check()
        current = self.stalls.get(instance_id)
        if current is None or current[1] is not None:
            return None
        self.stalls[instance_id] = (current[0], now)
        return current[0]

    async def keep_early_receipt(self, receipt: EarlyReceipt) -> None:
        self._check()
        self.early.setdefault((receipt.message_id, receipt.status.value), receipt)

    async def early_receipts(self, message_id: str) -> list[EarlyReceipt]:
        self._check()
        kept = [receipt for (mid, _), receipt in self.early.items() if mid == message_id]
        return sorted(kept, key=lambda receipt: receipt.received_at)

    async def drop_early_receipts(self, message_id: str) -> None:
        self._check()
        for key in [key for key in self.early if key[0] == message_id]:
            del self.early[key]

    async def expire_early_receipts(self, received_before: datetime) -> int:
        self._check()
        old = [key for key, receipt in self.early.items() if receipt.received_at < received_before]
        for key in old:
            del self.early[key]
        return len(old)


class FakeDirectory:
    """`InstanceDirectory`: health's view as a dict; `put` plays health."""

    def __init__(self) -> None:
        self.instances: dict[str, InstanceView] = {}

    def put(
        self,
        instance_id: str,
        state: InstanceState = InstanceState.CONNECTED,
        *,
        phone: str | None = "5511999990000",
        reason: str | None = None,
        paused: bool = False,
    ) -> None:
        self.instances[instance_id] = InstanceView(
            instance_id=instance_id,
            token="tok-fake",
            paused=paused,
            state=state,
            reason=reason,
            phone=phone,
            last_check_at=None,
        )

    async def get(self, instance_id: str, *, fresh: bool = False) -> InstanceView | None:  # noqa: ARG002 - always fresh
        return self.instances.get(instance_id)

    def forget(self, instance_id: str) -> None:
        """Nothing is kept: a dict is health's view itself here."""


@dataclass
class Published:
    subject: str
    event: Envelope
    stream: str
    msg_id: str


@dataclass
class FakePublisher:
    """`EventPublisher` that keeps every stored event once per `msg_id`, like a stream."""

    published: list[Published] = field(default_factory=list)

    async def publish(self, subject: str, event: Envelope, *, stream: str, msg_id: str) -> None:
        if any(item.msg_id == msg_id and item.stream == stream for item in self.published):
            return
        self.published.append(Published(subject, event, stream, msg_id))

    def on(self, subject: str) -> list[Envelope]:
        return [item.event for item in self.published if item.subject == subject]

    async def last_outcome(self, command_id: str) -> SendOutcome | None:
        """`OutcomeLog` over what was published, like the stream's last message per subject."""
        subject = subjects.send_outcome_subject(command_id)
        outcomes = [event for event in self.on(subject) if isinstance(event, SendOutcome)]
        return outcomes[-1] if outcomes else None


@dataclass
class SentCall:
    instance_id: str
    phone: str
    body: MessageBody
    quoted_message_id: str | None
    delay_message: int | None


class FakeProvider:
    """`Provider` answering from a script (default: accepted with `wamid-<n>`), recording calls.

    `before_answer(answer)` runs after the provider "accepted" and before the answer reaches
    the sender: a receipt can overtake the answer there, or the database can go away.
    """

    def __init__(self) -> None:
        self.calls: list[SentCall] = []
        self.script: list[SendAccepted | ProviderFailure] = []
        self.session = LiveSession(reachable=True, connected=True, phone="5511999990000")
        self.observed: list[str] = []
        self.before_answer: Callable[[SendAccepted | ProviderFailure], Awaitable[None]] | None
        self.before_answer = None

    async def send(
        self,
        instance: InstanceView,
        phone: str,
        body: MessageBody,
        *,
        quoted_message_id: str | None,
        delay_message: int | None,
    ) -> SendAccepted | ProviderFailure:
        self.calls.append(
            SentCall(instance.instance_id, phone, body, quoted_message_id, delay_message)
        )
        answer = (
            self.script.pop(0)
            if self.script
            else SendAccepted(message_id=f"wamid-{len(self.calls)}")
        )
        if self.before_answer is not None:
            await self.before_answer(answer)
        return answer

    async def observe(self, instance: InstanceView) -> LiveSession:
        self.observed.append(instance.instance_id)
        return self.session


@dataclass
class FakeListing:
    """`SendListing` answering what a test put in `sends` and `counts`; records each query."""

    sends_by_instance: dict[str, list[SendSummary]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    queries: list[tuple[str, datetime, timedelta]] = field(default_factory=list)

    async def sends(
        self, request: ListSends, *, now: datetime, stuck_window: timedelta
    ) -> list[SendSummary]:
        self.queries.append((request.instance_id, now, stuck_window))
        return self.sends_by_instance.get(request.instance_id, [])[: request.limit]

    async def stuck_counts(self, *, now: datetime, stuck_window: timedelta) -> dict[str, int]:
        self.queries.append(("*", now, stuck_window))
        return dict(self.counts)


class FakeCallLedger:
    """`CallLedger` over a `FakeCommandStore`: `called` holds the commands whose provider call
    was recorded (a test records one by adding its id)."""

    def __init__(self, store: FakeCommandStore) -> None:
        self.store = store
        self.called: set[str] = set()

    async def was_called(self, command_id: str) -> bool:
        return command_id in self.called

    async def reclaim_uncalled(self, command_id: str, now: datetime) -> bool:
        row = self.store.rows.get(command_id)
        if row is None or row.status != RowStatus.SENDING.value or command_id in self.called:
            return False
        self.store.rows[command_id] = row.model_copy(
            update={"status": RowStatus.CLAIMED.value, "sending_at": None, "updated_at": now}
        )
        return True


@dataclass
class Fakes:
    """Every fake, and the use cases' dependencies over them."""

    store: FakeCommandStore = field(default_factory=FakeCommandStore)
    directory: FakeDirectory = field(default_factory=FakeDirectory)
    provider: FakeProvider = field(default_factory=FakeProvider)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    clock: ManualClock = field(
        default_factory=lambda: ManualClock(datetime(2026, 11, 30, 21, 0, tzinfo=UTC))
    )
    policy: SendPolicy = field(default_factory=SendPolicy)
    slept: list[float] = field(default_factory=list)
    ledger: FakeCallLedger | None = None
    """Set it to have provider calls on record (as the partitioned sender has)."""

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)

    @property
    def deps(self) -> SenderDeps:
        return SenderDeps(
            store=self.store,
            directory=self.directory,
            provider=self.provider,
            publisher=self.publisher,
            outcomes=self.publisher,
            clock=self.clock,
            pacer=Pacer(self.clock, 0.0, self._sleep),
            policy=self.policy,
            sleep=self._sleep,
            calls=self.ledger,
        )
