"""A pull consumer pinned to one client at a time: JetStream priority groups, raw API.

Several replicas run the same `PinnedPullConsumer` on one durable declared with a priority
group and `priority_policy: pinned_client` (`ConsumerSpec.priority_group`): the server delivers
to the first client that pulls (every message carries its `Nats-Pin-Id`), the others' pulls wait
(`408`), and when the pinned client has not pulled for `priority_timeout` the pin moves to a
waiting client under a new id (facts checked on nats-server 2.15.1: /work/shared/RELIABILITY.md,
"Pinned groups"). nats-py 2.16 has no priority groups, so pulls are raw
`$JS.API.CONSUMER.MSG.NEXT` requests with `{"batch", "expires", "group", "id"}`.

A pin is not a lock: a client paused past `priority_timeout` wakes up with deliveries the server
has already given to the next pin. Whoever owns the work behind a pin must fence it (the sender
records each pin as a new epoch in PostgreSQL and checks it right before a provider call);
`on_pinned(pin_id)` is that hook, called before the first delivery of a new pin is handled.

Order within a subject (e.g. one WhatsApp instance) is kept:
- deliveries of one subject are handled one after another, in the order they arrived;
- when a pin starts, the deliveries the previous pin left unacknowledged come back (the server
  redelivers them first, once their ack wait is over, but in no particular order): the loop
  collects them (as many as `num_ack_pending` said when the pin started, for at most the ack
  wait) and starts them in stream order, before anything newer. `priority_timeout` should
  exceed `ack_wait`, so they are all due when the pin moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import structlog
from nats.errors import ConnectionClosedError

from zapgate.runtime.connection import NotConnectedError
from zapgate.runtime.consumer import PullConsumer
from zapgate.runtime.streams import ensure_consumer

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

M = TypeVar("M")
_log = structlog.get_logger("zapgate.runtime.pinned")

OnPinned: TypeAlias = Callable[[str, Callable[[], Awaitable[bool]]], Awaitable[bool]]
"""`on_pinned(pin_id, still_pinned) -> bool` (see `PinnedPullConsumer`)."""
PIN_HEADER = "Nats-Pin-Id"
_NANOS = 1_000_000_000
_PIN_LOST = "423"
"""`Nats-Pin-Id mismatch` / `Nats-Wrong-Pin-Id`: the pin moved to another client."""
_END_STATUSES = frozenset({"404", "408", "409", _PIN_LOST})


class PinnedPullConsumer(PullConsumer[M]):
    """`PullConsumer` over a pinned priority group (see the module docstring).

    `on_pinned(pin_id, still_pinned) -> bool` runs when this client receives a pin (its first
    delivery under a new `Nats-Pin-Id`); `still_pinned()` asks the server whether that pin is
    still the group's current one. False means the pin is not ours after all (stale): its
    deliveries are dropped unsettled and the loop pulls without a pin again. `pin_id` is the
    current pin (None while another client holds it). Construct it like a `PullConsumer`; its
    spec must declare a `priority_group`.
    """

    def __init__(
        self,
        *args: Any,  # noqa: ANN401 - forwarded to PullConsumer unchanged
        on_pinned: OnPinned,
        **kwargs: Any,  # noqa: ANN401 - forwarded to PullConsumer unchanged
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.spec.priority_group is None:
            raise ValueError(f"{self.spec.name} declares no priority group")
        self._group = self.spec.priority_group
        self._on_pinned = on_pinned
        self.pin_id: str | None = None
        self.pins = 0
        """How many pins this client received (tests wait on it)."""
        self.pinned = asyncio.Event()
        self._lanes: dict[str, asyncio.Lock] = {}
        self._lane_users: dict[str, int] = {}
        # Deliveries in hand but not being handled yet (a new pin being recorded, left-overs
        # being collected, a turn in their subject's lane): kept in progress (`+WPI`) every
        # third of the ack wait, so waiting never makes the server redeliver them.
        self._waiting: dict[int, Msg] = {}
        self._keeping: asyncio.Task[None] | None = None
        self._room_freed = asyncio.Event()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop pulling (see `PullConsumer.stop`) and the in-progress beat of waiting ones."""
        await super().stop(timeout)
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeping
            self._keeping = None

    def _keep(self, messages: list[Msg]) -> None:
        for message in messages:
            self._waiting[id(message)] = message
        if self._keeping is None or self._keeping.done():
            self._keeping = asyncio.create_task(self._keep_in_progress())

    async def _keep_in_progress(self) -> None:
        every = self.spec.ack_wait.total_seconds() / 3
        while True:
            await asyncio.sleep(every)  # a period, not a wait for an event
            for message in list(self._waiting.values()):
                if not self._ours(message):
                    # Its pin moved on: let its ack wait run out, so the new holder gets it.
                    self._waiting.pop(id(message), None)
                    continue
                with contextlib.suppress(Exception):
                    await message.in_progress()

    async def _run(self) -> None:
        while not self._stopping:
            await self._connection.connected.wait()
            generation = self._connection.generation
            try:
                client = self._connection.require()
                await ensure_consumer(client, self.spec)
                inbox = client.new_inbox()
                subscription = await client.subscribe(f"{inbox}.*")
            except NotConnectedError:
                continue
            except Exception as error:  # noqa: BLE001 - the loop must outlive any subscribe failure
                _log.warning(
                    "consumer_subscribe_failed", consumer=self.spec.durable, reason=repr(error)
                )
                await asyncio.sleep(self.spec.dependency_delay.total_seconds())
                continue
            self.subscribed.set()
            try:
                await self._pull_pinned(client, subscription, inbox, generation)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _pull_pinned(
        self, client: Client, subscription: Subscription, inbox: str, generation: int
    ) -> None:
        pulls = 0
        loop = asyncio.get_running_loop()
        # The pin lapses `priority_timeout` after this client's last pull: pull at least three
        # times as often, even with no room (then for one delivery).
        keep_alive = self.spec.priority_timeout.total_seconds() / 3
        last_pull = loop.time()
        while self._connection.generation == generation and not self._stopping:
            pulls += 1
            reply = f"{inbox}.{pulls}"
            try:
                batch = await self._room(last_pull + keep_alive)
                await self._request(client, reply, batch)
                last_pull = loop.time()
                await self._receive(client, subscription, reply, batch)
            except (ConnectionClosedError, NotConnectedError):
                return
            except Exception as error:  # noqa: BLE001 - the loop must outlive any pull failure
                _log.warning(
                    "consumer_fetch_failed", consumer=self.spec.durable, reason=repr(error)
                )
                await asyncio.sleep(self.spec.dependency_delay.total_seconds())
                return

    async def _request(self, client: Client, reply: str, batch: int) -> None:
        body: dict[str, Any] = {
            "batch": batch,
            "expires": round(self._fetch_wait * _NANOS),
            "group": self._group,
        }
        if self.pin_id is not None:
            body["id"] = self.pin_id
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.spec.stream}.{self.spec.durable}"
        await client.publish(subject, json.dumps(body).encode(), reply=reply)

    async def _room(self, keep_alive_at: float) -> int:
        """How many deliveries the next pull asks for: what `concurrency` leaves beside the
        ones in hand (waiting in their lane or being handled), at most `batch`. With no room,
        wait for some until `keep_alive_at` (loop time), then ask for one: the pin must not
        lapse. Deliveries in hand need a `+WPI` every third of the ack wait and all come back
        when this replica is lost, so holding a partition's whole backlog only costs."""
        if self.pin_id is None:
            # Not pinned: one delivery at most, so that when a pin comes with it, everything
            # else the consumer has unacknowledged is the previous pin's (`_collect_left_over`
            # counts them exactly; a whole batch would count as left-overs and be waited for).
            return 1
        loop = asyncio.get_running_loop()
        while (room := self._concurrency - len(self._in_flight)) <= 0:
            remaining = keep_alive_at - loop.time()
            if remaining <= 0:
                return 1
            self._room_freed.clear()
            try:
                await asyncio.wait_for(self._room_freed.wait(), remaining)
            except TimeoutError:
                return 1
        return min(self._batch, room)

    async def _receive(
        self, client: Client, subscription: Subscription, reply: str, batch: int
    ) -> None:
        """Handle the pull's deliveries as they come, until it ends (status, batch, time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._fetch_wait + 2
        received = 0
        while received < batch and (remaining := deadline - loop.time()) > 0:
            self._fetching = True
            try:
                message = await subscription.next_msg(timeout=remaining)
            except TimeoutError:
                return
            finally:
                self._fetching = False
            status = (message.headers or {}).get("Status")
            if status is None:
                received += 1
                await self._accept(client, [message], subscription, reply)
            elif message.subject == reply and status in _END_STATUSES:
                if status == _PIN_LOST and self.pin_id is not None:
                    _log.warning(
                        "consumer_pin_lost", consumer=self.spec.durable, pin_id=self.pin_id
                    )
                    self._unpin()
                return
            # A status of an earlier pull (its reply subject differs) or a heartbeat: skip it.

    async def _pull_once(
        self, client: Client, subscription: Subscription, reply: str, batch: int | None = None
    ) -> tuple[list[Msg], str | None]:
        """One pull request; its deliveries and the status that ended it (None: batch full)."""
        want = batch or self._batch
        await self._request(client, reply, want)
        messages: list[Msg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._fetch_wait + 2
        while len(messages) < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return messages, None
            try:
                message = await subscription.next_msg(timeout=remaining)
            except TimeoutError:
                return messages, None
            status = (message.headers or {}).get("Status")
            if status is None:
                messages.append(message)
            elif message.subject == reply and status in _END_STATUSES:
                return messages, status
            # A status of an earlier pull (its reply subject differs) or a heartbeat: skip it.
        return messages, None

    async def _accept(
        self, client: Client, messages: list[Msg], subscription: Subscription, reply: str
    ) -> None:
        pin = (messages[0].headers or {}).get(PIN_HEADER)
        self._keep(messages)
        if pin is not None and pin != self.pin_id:
            # Recording a pin takes round trips (the server, the owner's database): restart the
            # ack wait before and after, whatever the beat's period.
            await _in_progress(messages)
            # Unacknowledged now and not in hand: what the previous pin left.
            pending = max(0, (await self._info(client)).get("num_ack_pending", 0) - len(messages))

            async def still_pinned(pin: str = pin) -> bool:
                return await self._server_pin(client) == pin

            if not await self._on_pinned(pin, still_pinned):
                _log.warning("consumer_pin_refused", consumer=self.spec.durable, pin_id=pin)
                self._unpin()
                self._drop(messages)
                return
            await _in_progress(messages)
            self.pin_id = pin
            self.pins += 1
            self.pinned.set()
            _log.info(
                "consumer_pinned",
                consumer=self.spec.durable,
                pin_id=pin,
                left_unacknowledged=pending,
            )
            messages = await self._collect_left_over(client, messages, subscription, reply, pending)
        for message in messages:
            if (message.headers or {}).get(PIN_HEADER) not in {None, self.pin_id}:
                self._drop([message])  # delivered under an older pin: the server moved it on
                continue
            self._start(message)

    async def _collect_left_over(
        self,
        client: Client,
        messages: list[Msg],
        subscription: Subscription,
        reply: str,
        pending: int,
    ) -> list[Msg]:
        """Pull until every delivery the consumer has unacknowledged is in hand (the previous
        pin's left-overs come back once their ack wait is over; a previous holder that is
        still alive stops keeping them once it sees the pin moved), then return everything in
        stream order, the newest delivery of each message. Bounded in time."""
        by_sequence = {message.metadata.sequence.stream: message for message in messages}
        seen = list(messages)
        loop = asyncio.get_running_loop()
        deadline = (
            loop.time() + (3 * self.spec.ack_wait + self.spec.priority_timeout).total_seconds()
        )
        again = 0
        expected = pending
        while pending > 0 and loop.time() < deadline and not self._stopping:
            again += 1
            # Only as many as are missing: the rest of the backlog stays on the server.
            more, status = await self._pull_once(
                client, subscription, f"{reply}-{again}", min(self._batch, pending)
            )
            self._keep(more)
            seen += more
            for message in more:
                by_sequence[message.metadata.sequence.stream] = message
            if status == _PIN_LOST:
                break
            # Nothing is acknowledged meanwhile: done once all that is pending is in hand.
            info = await self._info(client)
            pending = int(info.get("num_ack_pending", 0)) - len(by_sequence) if info else pending
            if pending > 0 and not any(m.metadata.num_delivered > 1 for m in more):
                # No left-over came back, only new ones: theirs are not due yet (a previous
                # holder kept them in progress until it saw the pin move). The server gives
                # them again when their ack wait ends; nothing announces it, so look again a
                # third of the ack wait later rather than pulling the backlog meanwhile.
                await asyncio.sleep(
                    min(self.spec.ack_wait.total_seconds() / 3, max(0, deadline - loop.time()))
                )
        _log.info(
            "consumer_left_overs_collected",
            consumer=self.spec.durable,
            expected=expected,
            missing=max(0, pending),
            in_hand=len(by_sequence),
        )
        # An older delivery of a message that came again is not handled: stop beating for it.
        self._drop([m for m in seen if by_sequence[m.metadata.sequence.stream] is not m])
        return [by_sequence[sequence] for sequence in sorted(by_sequence)]

    async def _info(self, client: Client) -> dict[str, Any]:
        """The consumer's info now (empty when the server cannot say: the order of left-overs
        is then best effort)."""
        verb = f"$JS.API.CONSUMER.INFO.{self.spec.stream}.{self.spec.durable}"
        try:
            reply = await client.request(verb, b"", timeout=5)
            info: dict[str, Any] = json.loads(reply.data)
        except Exception as error:  # noqa: BLE001 - see the docstring
            _log.warning("consumer_info_failed", consumer=self.spec.durable, reason=repr(error))
            return {}
        return info

    async def _server_pin(self, client: Client) -> str | None:
        """The group's pinned client id as the server has it now (None: nobody, or unknown)."""
        for group in (await self._info(client)).get("priority_groups") or []:
            if group.get("group") == self._group:
                pinned: str | None = group.get("pinned_client_id")
                return pinned
        return None

    def _ours(self, message: Msg) -> bool:
        """Delivered under the pin this client holds now (or without a pin at all)."""
        pin = (message.headers or {}).get(PIN_HEADER)
        return pin is None or pin == self.pin_id

    def _drop(self, messages: list[Msg]) -> None:
        for message in messages:
            self._waiting.pop(id(message), None)

    def _unpin(self) -> None:
        self.pin_id = None
        self.pinned.clear()

    def _start(self, message: Msg) -> None:
        task = asyncio.create_task(self._in_lane(message))
        self._in_flight.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        self._room_freed.set()

    async def _in_lane(self, message: Msg) -> Any:  # noqa: ANN401 - the runtime's Outcome
        """Handle `message` after every earlier delivery of its subject ended (tasks start in
        arrival order and `asyncio.Lock` wakes waiters first come, first served)."""
        key = message.subject
        lock = self._lanes.setdefault(key, asyncio.Lock())
        self._lane_users[key] = self._lane_users.get(key, 0) + 1
        try:
            async with lock:
                self._drop([message])  # `handle` keeps it in progress from here on
                if not self._ours(message):
                    # The pin moved while it waited: not ours to handle or settle.
                    _log.info(
                        "delivery_left_to_new_pin",
                        consumer=self.spec.durable,
                        stream_seq=message.metadata.sequence.stream,
                    )
                    return None
                return await self.handle(message)
        finally:
            self._drop([message])
            self._lane_users[key] -= 1
            if self._lane_users[key] == 0:
                del self._lane_users[key]
                del self._lanes[key]


async def _in_progress(messages: list[Msg]) -> None:
    for message in messages:
        with contextlib.suppress(Exception):
            await message.in_progress()


async def fetch_pinned(  # noqa: PLR0913 - one pull request's fields, keyword-only
    client: Client,
    *,
    stream: str,
    durable: str,
    group: str,
    batch: int = 1,
    expires: float = 5.0,
    pin_id: str | None = None,
) -> list[Msg]:
    """One raw pull of up to `batch` messages from a pinned priority group (tools and tests;
    the loop is `PinnedPullConsumer`). Returns what came before `expires` s or a status ended
    the pull (`408` nothing for this client, `423` another pin); `Nats-Pin-Id` is on each."""
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    body: dict[str, Any] = {
        "batch": batch,
        "expires": round(expires * _NANOS),
        "group": group,
    }
    if pin_id is not None:
        body["id"] = pin_id
    messages: list[Msg] = []
    try:
        await client.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", json.dumps(body).encode(), reply=inbox
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + expires + 2
        while len(messages) < batch and (remaining := deadline - loop.time()) > 0:
            try:
                message = await subscription.next_msg(timeout=remaining)
            except TimeoutError:
                break
            if (message.headers or {}).get("Status") is not None:
                break
            messages.append(message)
    finally:
        await subscription.unsubscribe()
    return messages
