"""`Simulator`: drive a simulator whose server runs on another thread's event loop.

Every operation runs on the simulator's loop (`run_coroutine_threadsafe`), so its state has a
single owner. Control calls are synchronous (they only change state and return at once);
anything that waits or posts a webhook is awaitable and never blocks the caller's loop.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from zapgate.wapi.simulator.models import (
    CallFilter,
    CallRecord,
    DeliveryMode,
    Fault,
    FaultKind,
    InstancePatch,
    InstanceSpec,
    InstanceState,
    RestartMode,
    WebhookFilter,
    WebhookRecord,
)
from zapgate.wapi.webhook_slots import WebhookSlot

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from pydantic import JsonValue

    from zapgate.wapi.simulator.engine import SimulatorEngine
    from zapgate.wapi.simulator.payloads import Payload

T = TypeVar("T")
_CONTROL_TIMEOUT_S = 10.0


class Simulator:
    """The test-facing handle of one running simulator."""

    def __init__(self, engine: SimulatorEngine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop

    def __repr__(self) -> str:
        return "Simulator()"

    # --- state -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every instance, fault, webhook URL and record; end hanging requests."""
        self._run(self._engine.reset())

    def add_instance(  # noqa: PLR0913 - the common knobs, by keyword
        self,
        instance_id: str,
        token: str,
        *,
        phone: str | None = None,
        connected: bool = True,
        lid: str | None = None,
        webhook_url: str | None = None,
        delivery: DeliveryMode | None = None,
        restart_mode: RestartMode = RestartMode.COMEBACK,
        restart_delay_s: float = 0.0,
        latency_s: float = 0.0,
    ) -> None:
        """Add an instance: `phone=None` and `connected=True` is an incomplete session."""
        spec = InstanceSpec.model_validate(
            {
                "instance_id": instance_id,
                "token": token,
                "phone": phone,
                "connected": connected,
                "lid": lid,
                "webhook_url": webhook_url,
                "delivery": delivery,
                "restart_mode": restart_mode,
                "restart_delay_s": restart_delay_s,
                "latency_s": latency_s,
            }
        )
        self._call(self._engine.add_instance, spec)

    def add(self, spec: InstanceSpec) -> None:
        self._call(self._engine.add_instance, spec)

    def configure(self, instance_id: str, patch: InstancePatch) -> None:
        """Apply only the fields set in `patch` (e.g. `InstancePatch(phone=None)`)."""
        self._call(self._engine.configure, instance_id, patch)

    def set_connected(self, instance_id: str, *, connected: bool) -> None:
        """Connect or drop the session; posts webhookConnected/Disconnected on a change."""
        self.configure(instance_id, InstancePatch(connected=connected))

    def set_phone(self, instance_id: str, phone: str | None) -> None:
        self.configure(instance_id, InstancePatch(phone=phone))

    def set_latency(self, instance_id: str, seconds: float) -> None:
        self.configure(instance_id, InstancePatch(latency_s=seconds))

    def set_restart(self, instance_id: str, mode: RestartMode, *, delay_s: float = 0.0) -> None:
        self.configure(instance_id, InstancePatch(restart_mode=mode, restart_delay_s=delay_s))

    def set_delivery(
        self, instance_id: str, mode: DeliveryMode, *, step_delay_s: float = 0.0
    ) -> None:
        self.configure(instance_id, InstancePatch(delivery=mode, status_step_delay_s=step_delay_s))

    def complete_restart(self, instance_id: str) -> None:
        """Bring back a session restarted with `RestartMode.MANUAL`."""
        self._call(self._engine.complete_restart, instance_id)

    def is_connected(self, instance_id: str) -> bool:
        return self._call(self._engine.is_connected, instance_id)

    def state(self, instance_id: str) -> InstanceState:
        """Connection, phone, held answers, QR codes served, pending pairing code, flapping."""
        return self._call(self._engine.state, instance_id)

    def blip(
        self, instance_id: str | None, *, operations: set[str] | None = None, times: int = 1
    ) -> None:
        """Close the connection of the next `times` matching calls without answering."""
        self.fail(instance_id, FaultKind.DISCONNECT, operations=operations, times=times)

    def set_send_timing(
        self,
        instance_id: str,
        *,
        receipts_before_answer: bool = True,
        answer_delay_s: float = 0.0,
        hold: bool = False,
    ) -> None:
        """How sends are answered: receipts (echo + statuses) before the answer, the answer
        `answer_delay_s` later, and/or held until `release_answers`."""
        self.configure(
            instance_id,
            InstancePatch(
                receipts_before_answer=receipts_before_answer,
                send_answer_delay_s=answer_delay_s,
                hold_send_answers=hold,
            ),
        )

    def release_answers(self, instance_id: str | None = None) -> int:
        """Answer the held sends of `instance_id` (None: all); returns how many were held."""
        return self._call(self._engine.release_answers, instance_id)

    def flap(self, instance_id: str, *, pairs: int, interval_s: float = 0.0) -> None:
        """Drop and reconnect `pairs` times, `interval_s` apart, in the background (webhooks
        each time); `await settle()` waits for the end; `pairs=0` stops a running flap."""
        self._call(partial(self._engine.flap, instance_id, pairs=pairs, interval_s=interval_s))

    def set_clock_skew(self, instance_id: str, seconds: float) -> None:
        """Add `seconds` to the `moment` of every webhook built for this instance."""
        self.configure(instance_id, InstancePatch(moment_offset_s=seconds))

    def set_qr(
        self, instance_id: str, *, rotate_s: float = 20.0, scan_after_s: float | None = None
    ) -> None:
        """QR codes change every `rotate_s` (0: every call); scanned `scan_after_s` after the
        first one was served (None: only by `scan_qr`)."""
        self.configure(
            instance_id, InstancePatch(qr_rotate_s=rotate_s, qr_scan_after_s=scan_after_s)
        )

    def scan_qr(self, instance_id: str, *, phone: str | None = None) -> None:
        """Scan the QR served last: the session connects (ValueError if none was served)."""
        self._call(partial(self._engine.scan_qr, instance_id, phone=phone))

    def set_pairing(self, instance_id: str, *, enter_after_s: float | None) -> None:
        """A pairing code is entered `enter_after_s` after it was issued (None: by call only)."""
        self.configure(instance_id, InstancePatch(pairing_enter_after_s=enter_after_s))

    def enter_pairing_code(self, instance_id: str, code: str | None = None) -> None:
        """Enter the pending pairing code: the session connects with the code's phone number."""
        self._call(self._engine.enter_pairing_code, instance_id, code)

    def set_fault(self, instance_id: str | None, fault: Fault | None) -> None:
        """Answer `fault` instead (instance_id None: every call); `None` clears it."""
        self._call(self._engine.set_fault, instance_id, fault)

    def fail(  # noqa: PLR0913 - a shorthand over Fault's fields
        self,
        instance_id: str | None,
        kind: FaultKind,
        *,
        status_code: int | None = None,
        message: str | None = None,
        operations: set[str] | None = None,
        times: int | None = None,
    ) -> None:
        fault = Fault(
            kind=kind,
            status_code=status_code,
            message=message,
            operations=frozenset(operations) if operations is not None else None,
            times=times,
        )
        self.set_fault(instance_id, fault)

    def set_webhook(self, instance_id: str, slot: WebhookSlot, url: str | None) -> None:
        self._call(self._engine.set_webhook, instance_id, slot, url)

    def set_all_webhooks(self, instance_id: str, url: str | None) -> None:
        for slot in WebhookSlot:
            self.set_webhook(instance_id, slot, url)

    def webhook_urls(self, instance_id: str) -> dict[WebhookSlot, str]:
        return self._call(self._engine.webhook_urls, instance_id)

    # --- records -----------------------------------------------------------------------------

    def calls(
        self, *, operation: str | None = None, instance_id: str | None = None
    ) -> list[CallRecord]:
        where = CallFilter(operation=operation, instance_id=instance_id)
        return self._call(self._engine.calls, where)

    def webhooks(
        self,
        *,
        instance_id: str | None = None,
        slot: WebhookSlot | None = None,
        event: str | None = None,
        where: dict[str, JsonValue] | None = None,
    ) -> list[WebhookRecord]:
        flt = WebhookFilter(instance_id=instance_id, slot=slot, event=event, where=where or {})
        return self._call(self._engine.webhooks, flt)

    def clear_records(self) -> None:
        self._call(self._engine.clear_records)

    async def wait_for_calls(
        self,
        *,
        operation: str | None = None,
        instance_id: str | None = None,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[CallRecord]:
        """All matching calls once there are at least `count`; TimeoutError otherwise."""
        where = CallFilter(operation=operation, instance_id=instance_id)
        return await self._await(self._engine.wait_for_calls(where, count, timeout))

    async def wait_for_webhooks(  # noqa: PLR0913 - filter fields by keyword
        self,
        *,
        instance_id: str | None = None,
        slot: WebhookSlot | None = None,
        event: str | None = None,
        where: dict[str, JsonValue] | None = None,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[WebhookRecord]:
        """All matching posted webhooks once there are at least `count`."""
        flt = WebhookFilter(instance_id=instance_id, slot=slot, event=event, where=where or {})
        return await self._await(self._engine.wait_for_webhooks(flt, count, timeout))

    async def settle(self) -> None:
        """Wait until every background job (webhook posts, restart comebacks) has finished."""
        await self._await(self._engine.settle())

    # --- webhooks the test triggers ----------------------------------------------------------

    async def post_webhook(
        self, instance_id: str, slot: WebhookSlot, body: JsonValue, *, times: int = 1
    ) -> list[WebhookRecord]:
        """POST any body to the slot's URL, `times` times (unknown shapes, provider resends)."""
        return await self._await(self._engine.post_webhook(instance_id, slot, body, times=times))

    async def receive(
        self,
        instance_id: str,
        content: Payload,
        *,
        chat_id: str,
        sender_id: str | None = None,
    ) -> WebhookRecord:
        """An incoming message (`webhookReceived`) with `content` as its `msgContent`."""
        return await self._await(
            self._engine.receive(instance_id, content, chat_id=chat_id, sender_id=sender_id)
        )

    async def emit_status(
        self, instance_id: str, message_id: str, status: str, *, chat_id: str
    ) -> WebhookRecord:
        return await self._await(
            self._engine.emit_status(instance_id, message_id, status, chat_id=chat_id)
        )

    async def emit_presence(self, instance_id: str, chat_id: str, status: str) -> WebhookRecord:
        return await self._await(self._engine.emit_presence(instance_id, chat_id, status))

    # --- crossing to the simulator's loop ----------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        async def run() -> T:
            return fn(*args)

        return self._run(run())

    def _run(self, job: Coroutine[object, object, T]) -> T:
        if self._on_server_thread():
            job.close()
            raise RuntimeError("use the engine directly on the simulator's own loop")
        return asyncio.run_coroutine_threadsafe(job, self._loop).result(_CONTROL_TIMEOUT_S)

    async def _await(self, job: Coroutine[object, object, T]) -> T:
        if self._on_server_thread():
            return await job
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job, self._loop))

    def _on_server_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False
