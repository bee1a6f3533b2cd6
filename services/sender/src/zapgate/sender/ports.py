"""Every port the sender's use cases talk through (`typing.Protocol`s).

Real implementations live in `adapters/` (PostgreSQL, JetStream, W-API); in-memory ones that
record what happened live in `tests/fakes.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime, timedelta

    from zapgate.contracts.envelope import Envelope
    from zapgate.contracts.sending import (
        ListSends,
        MessageBody,
        SendMessage,
        SendOutcome,
        SendSummary,
    )
    from zapgate.sender.domain import EarlyReceipt, InstanceView, LiveSession, StuckMessage
    from zapgate.sender.tables import RowStatus, SendCommandRow
    from zapgate.wapi.failures import ProviderFailure
    from zapgate.wapi.results import SendAccepted


class StoreUnavailableError(ConnectionError):
    """The database cannot be reached right now (a store call may succeed later)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The result of claiming a command: `new` is True for exactly one delivery."""

    new: bool
    row: SendCommandRow


@dataclass(frozen=True, slots=True)
class InstanceStuck:
    """The stuck messages of one instance and its latest delivery receipt."""

    instance_id: str
    stuck: list[StuckMessage]
    last_delivery_at: datetime | None


class CommandStore(Protocol):
    """Where commands, their decisions and early receipts live.

    Every status change is a compare-and-set: `move` returns the new row, or None when the
    row was not in one of `from_statuses` (another delivery moved it first).
    """

    async def claim(
        self,
        command: SendMessage,
        now: datetime,
        *,
        sending: bool = False,
        session_health: str | None = None,
    ) -> Claim:
        """Insert the command once: `claimed`, or `sending` when the preflight already passed."""
        ...

    async def claim_sending(
        self,
        command: SendMessage,
        now: datetime,
        *,
        session_health: str | None,
        view_version: str | None,
    ) -> Claim | None:
        """Insert the command once, straight into `sending`, only while health's view row of
        its instance still has `view_version` (`InstanceView.version`; None: no check), checked
        atomically with the insert. None: the row changed since it was read, nothing written."""
        ...

    async def get(self, command_id: str) -> SendCommandRow | None:
        """The command's row, or None."""
        ...

    async def move(
        self,
        command_id: str,
        *,
        from_statuses: Collection[RowStatus],
        to: RowStatus,
        now: datetime,
        **values: Any,  # noqa: ANN401 - column values, checked by the table
    ) -> SendCommandRow | None:
        """Compare-and-set the status (and the status's `<status>_at` time unless given)."""
        ...

    async def by_provider_message_id(self, message_id: str) -> SendCommandRow | None:
        """The command the provider named `message_id`, or None."""
        ...

    async def held(self, instance_id: str | None = None) -> list[SendCommandRow]:
        """Held commands (of one instance), oldest first."""
        ...

    async def unalerted_stuck(self, sent_before: datetime) -> list[SendCommandRow]:
        """`sent` rows sent before `sent_before` with no stuck alert yet."""
        ...

    async def mark_stuck_alerted(self, command_id: str, now: datetime) -> bool:
        """Claim the one stuck alert of a command: True for exactly one caller."""
        ...

    async def stuck_by_instance(
        self, sent_before: datetime, sent_after: datetime
    ) -> list[InstanceStuck]:
        """`sent` rows in the window, grouped by instance, with each one's last delivery."""
        ...

    async def open_stall(self, instance_id: str, message_ids: list[str], now: datetime) -> bool:
        """Record a delivery stall: True when none was open."""
        ...

    async def close_stall(self, instance_id: str, now: datetime) -> list[str] | None:
        """Close the open stall; its message ids, or None when none was open."""
        ...

    async def keep_early_receipt(self, receipt: EarlyReceipt) -> None:
        """Keep a receipt whose message is not known yet (once per message and status)."""
        ...

    async def early_receipts(self, message_id: str) -> list[EarlyReceipt]:
        """The kept receipts of one provider message id, in arrival order."""
        ...

    async def drop_early_receipts(self, message_id: str) -> None:
        """Forget the kept receipts of one message id (they were applied)."""
        ...

    async def expire_early_receipts(self, received_before: datetime) -> int:
        """Forget receipts kept since before `received_before`; how many went."""
        ...


class CallLedger(Protocol):
    """Provider calls recorded right before they are made (`send_calls`): a `sending` command
    with no call recorded never reached the provider and may be taken back and sent."""

    async def was_called(self, command_id: str) -> bool:
        """True if a provider call of the command was recorded (it happened, or may have)."""
        ...

    async def reclaim_uncalled(self, command_id: str, now: datetime) -> bool:
        """`sending` -> `claimed` if no call of the command was recorded; False otherwise."""
        ...


class InstanceDirectory(Protocol):
    """Health's view of instances (`instance_gate_view`, read only)."""

    async def get(self, instance_id: str, *, fresh: bool = False) -> InstanceView | None:
        """What the preflight needs of one instance, or None when health does not know it.

        An implementation may answer from memory; `fresh=True` reads health's view itself.
        """
        ...

    def forget(self, instance_id: str) -> None:
        """Drop whatever is remembered of one instance (health said it changed)."""
        ...


class EventPublisher(Protocol):
    """Where the sender's events go."""

    async def publish(self, subject: str, event: Envelope, *, stream: str, msg_id: str) -> None:
        """Store `event` in `stream` once (the stream dedupes on `msg_id`); raise when unsure."""
        ...


class OutcomeLog(Protocol):
    """The outcomes already published (the stream keeps them): where a crashed sender's
    accepted answer is found again when the database never got it."""

    async def last_outcome(self, command_id: str) -> SendOutcome | None:
        """The latest published outcome of a command, or None."""
        ...


class Provider(Protocol):
    """The W-API calls a send needs. Never raises for a provider failure: returns it."""

    async def send(
        self,
        instance: InstanceView,
        phone: str,
        body: MessageBody,
        *,
        quoted_message_id: str | None,
        delay_message: int | None,
    ) -> SendAccepted | ProviderFailure:
        """One provider send call (`/message/send-*`); the answer or the typed failure."""
        ...

    async def observe(self, instance: InstanceView) -> LiveSession:
        """A live look at the session: status-instance, then fetch-instance for the phone."""
        ...


class SendListing(Protocol):
    """Read-only queries for the operator console, off the send path (adapters/listing.py)."""

    async def sends(
        self, request: ListSends, *, now: datetime, stuck_window: timedelta
    ) -> list[SendSummary]:
        """One instance's sends, newest first, filtered by status or stuck (`sent` longer than
        `stuck_window` before `now`); at most `request.limit`."""
        ...

    async def stuck_counts(self, *, now: datetime, stuck_window: timedelta) -> dict[str, int]:
        """Stuck sends per instance id (instances with none are left out)."""
        ...
