"""The simulator's state and behaviour, independent of HTTP.

Everything here runs on the simulator's own event loop (one thread): no locks are needed, and
waiters are woken by replacing an `asyncio.Event` whenever a record is added.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import httpx
import segno
from pydantic import JsonValue

from zapgate.wapi.simulator import payloads
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
    from collections.abc import Awaitable, Callable, Coroutine

R = TypeVar("R")
_Handler: TypeAlias = "Callable[[_Instance, ProviderRequest], ProviderReply]"

_STATUS_PROGRESSION = ("SERVER", "DELIVERY", "READ")
_SEND_CONTENT_FIELD = {
    "send-text": "message",
    "send-image": "image",
    "send-audio": "audio",
    "send-video": "video",
    "send-document": "document",
}
# Pairing codes as WhatsApp shows them: 8 characters without look-alikes (0/O, 1/I).
_PAIRING_ALPHABET = "ABCDEFGHJKLMNPQRSTVWXYZ23456789"
_GATEWAY_PAGES = {
    FaultKind.BAD_GATEWAY: (502, "502 Bad Gateway"),
    FaultKind.SERVICE_UNAVAILABLE: (503, "503 Service Temporarily Unavailable"),
    FaultKind.GATEWAY_TIMEOUT: (504, "504 Gateway Time-out"),
}


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    method: str
    operation: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: JsonValue


@dataclass(frozen=True, slots=True)
class ProviderReply:
    status_code: int
    json: JsonValue = None
    html: str | None = None
    close_connection: bool = False
    """Answer nothing: close the connection instead."""
    after_send: Coroutine[object, object, None] | None = field(default=None, compare=False)
    """An accepted send's webhooks, run before or after answering (see `_answer_send`)."""


def _error(status_code: int, message: str) -> ProviderReply:
    return ProviderReply(status_code, {"error": True, "message": message})


@dataclass(slots=True)
class _Instance:
    spec: InstanceSpec
    connected: bool
    phone: str | None
    lid: str | None
    latency_s: float
    restart_mode: RestartMode
    restart_delay_s: float
    delivery: DeliveryMode | None
    status_step_delay_s: float
    receipts_before_answer: bool
    send_answer_delay_s: float
    hold_send_answers: bool
    moment_offset_s: float
    qr_rotate_s: float
    qr_scan_after_s: float | None
    pairing_enter_after_s: float | None
    webhooks: dict[WebhookSlot, str] = field(default_factory=dict)
    fault: Fault | None = None
    fault_left: int | None = None
    # Serialises this instance's webhook posts so receivers see them in the order they happened.
    post_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held send answers wait on this; `release_answers` sets it and puts a fresh one in place.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    qr_first_at: float | None = None
    qr_served: int = 0
    qr_seed: str = field(default_factory=lambda: secrets.token_hex(8))
    pairing_code: str | None = None
    pairing_phone: str | None = None
    # Timers (QR scan, pairing entry) and the flapping job; cancelled when they no longer apply.
    timers: set[asyncio.Task[object]] = field(default_factory=set)
    flapping: asyncio.Task[object] | None = None

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id

    @property
    def known_phone(self) -> str | None:
        return self.phone if self.connected else None

    @property
    def effective_delivery(self) -> DeliveryMode:
        if self.delivery is not None:
            return self.delivery
        return DeliveryMode.PROGRESS if self.phone else DeliveryMode.ECHO_ONLY


class SimulatorEngine:
    """All simulator state. Call its methods only on the loop that serves the simulator."""

    def __init__(self, *, webhook_timeout_s: float = 5.0) -> None:
        self._webhook_timeout_s = webhook_timeout_s
        self._instances: dict[str, _Instance] = {}
        self._calls: list[CallRecord] = []
        # Send calls recorded per instance (fetch-instance's `messagesSent`), kept with the
        # records so answering it never scans every call (a scan per fetch is quadratic).
        self._sends: Counter[str] = Counter()
        self._webhooks: list[WebhookRecord] = []
        self._global_fault: Fault | None = None
        self._global_fault_left: int | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._changed = asyncio.Event()
        self._release_hangs = asyncio.Event()
        self._http: httpx.AsyncClient | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._webhook_timeout_s)

    async def stop(self) -> None:
        self.release_hangs()
        await self._cancel_tasks()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def release_hangs(self) -> None:
        """End every hanging request now (a hang must never block shutdown or the next test)."""
        self._release_hangs.set()
        self._release_hangs = asyncio.Event()

    async def reset(self) -> None:
        self.release_hangs()
        await self._cancel_tasks()
        self._instances.clear()
        self._calls.clear()
        self._sends.clear()
        self._webhooks.clear()
        self._global_fault = None
        self._global_fault_left = None
        self._notify()

    async def settle(self) -> None:
        """Return once every background job (webhook posts, restarts) has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # --- control ----------------------------------------------------------------------------

    def add_instance(self, spec: InstanceSpec) -> None:
        instance = _Instance(
            spec=spec,
            connected=spec.connected,
            phone=spec.phone,
            lid=spec.lid,
            latency_s=spec.latency_s,
            restart_mode=spec.restart_mode,
            restart_delay_s=spec.restart_delay_s,
            delivery=spec.delivery,
            status_step_delay_s=spec.status_step_delay_s,
            receipts_before_answer=spec.receipts_before_answer,
            send_answer_delay_s=spec.send_answer_delay_s,
            hold_send_answers=spec.hold_send_answers,
            moment_offset_s=spec.moment_offset_s,
            qr_rotate_s=spec.qr_rotate_s,
            qr_scan_after_s=spec.qr_scan_after_s,
            pairing_enter_after_s=spec.pairing_enter_after_s,
        )
        if spec.webhook_url is not None:
            instance.webhooks = dict.fromkeys(WebhookSlot, spec.webhook_url)
        self._instances[spec.instance_id] = instance

    def configure(self, instance_id: str, patch: InstancePatch) -> None:
        instance = self._instance(instance_id)
        changes = patch.model_dump(exclude_unset=True)
        for name in changes.keys() - {"connected"}:
            setattr(instance, name, getattr(patch, name))
        if patch.connected is not None:
            self._set_connected(instance, connected=patch.connected)

    def set_fault(self, instance_id: str | None, fault: Fault | None) -> None:
        """A fault for one instance, or (instance_id None) for every call."""
        left = fault.times if fault is not None else None
        if instance_id is None:
            self._global_fault, self._global_fault_left = fault, left
            return
        instance = self._instance(instance_id)
        instance.fault, instance.fault_left = fault, left

    def set_webhook(self, instance_id: str, slot: WebhookSlot, url: str | None) -> None:
        instance = self._instance(instance_id)
        if url is None:
            instance.webhooks.pop(slot, None)
        else:
            instance.webhooks[slot] = url

    def webhook_urls(self, instance_id: str) -> dict[WebhookSlot, str]:
        return dict(self._instance(instance_id).webhooks)

    def is_connected(self, instance_id: str) -> bool:
        return self._instance(instance_id).connected

    def complete_restart(self, instance_id: str) -> None:
        self._set_connected(self._instance(instance_id), connected=True)

    def state(self, instance_id: str) -> InstanceState:
        instance = self._instance(instance_id)
        return InstanceState(
            instance_id=instance_id,
            connected=instance.connected,
            phone=instance.phone,
            held_answers=instance.held,
            qr_codes_served=instance.qr_served,
            pairing_code=instance.pairing_code,
            flapping=instance.flapping is not None and not instance.flapping.done(),
        )

    def release_answers(self, instance_id: str | None = None) -> int:
        """Answer every held send of the instance (None: of every instance); how many were held."""
        chosen = self._instances.values() if instance_id is None else [self._instance(instance_id)]
        released = 0
        for instance in chosen:
            released += instance.held
            instance.release.set()
            instance.release = asyncio.Event()
        return released

    def flap(self, instance_id: str, *, pairs: int, interval_s: float) -> None:
        """Drop and reconnect the session `pairs` times, `interval_s` apart (webhooks each
        time), in the background; a new call replaces a running one (`pairs=0` stops it)."""
        instance = self._instance(instance_id)
        if instance.flapping is not None:
            instance.flapping.cancel()
            instance.flapping = None
        if pairs > 0:
            instance.flapping = self._spawn(self._flap(instance, pairs, interval_s))

    def scan_qr(self, instance_id: str, *, phone: str | None = None) -> None:
        """The QR served last is scanned: the session connects (with `phone`, default the
        instance's own) and `webhookConnected` is posted. Refused when no QR was served."""
        instance = self._instance(instance_id)
        if instance.connected:
            raise ValueError(f"instance {instance_id} is already connected")
        if instance.qr_served == 0:
            raise ValueError(f"no QR code was served to instance {instance_id} since it dropped")
        self._pair(instance, phone or instance.phone)

    def enter_pairing_code(self, instance_id: str, code: str | None = None) -> None:
        """The pending pairing code is entered on the phone (`code`, if given, must match):
        the session connects with the phone number the code was asked for."""
        instance = self._instance(instance_id)
        if instance.pairing_code is None:
            raise ValueError(f"instance {instance_id} has no pairing code waiting")
        if instance.connected:
            raise ValueError(f"instance {instance_id} is already connected")
        if code is not None and _code_key(code) != _code_key(instance.pairing_code):
            raise ValueError(f"pairing code {code!r} is not the one issued")
        self._pair(instance, instance.pairing_phone)

    # --- records ----------------------------------------------------------------------------

    def calls(self, where: CallFilter | None = None) -> list[CallRecord]:
        return [record for record in self._calls if where is None or where.matches(record)]

    def webhooks(self, where: WebhookFilter | None = None) -> list[WebhookRecord]:
        return [record for record in self._webhooks if where is None or where.matches(record)]

    def clear_records(self) -> None:
        self._calls.clear()
        self._sends.clear()
        self._webhooks.clear()
        self._notify()

    async def wait_for_calls(
        self, where: CallFilter, count: int, timeout: float
    ) -> list[CallRecord]:
        return await self._wait_for(lambda: self.calls(where), count, timeout, f"calls {where}")

    async def wait_for_webhooks(
        self, where: WebhookFilter, count: int, timeout: float
    ) -> list[WebhookRecord]:
        return await self._wait_for(
            lambda: self.webhooks(where), count, timeout, f"webhooks {where}"
        )

    # --- webhooks the test triggers ---------------------------------------------------------

    async def post_webhook(
        self, instance_id: str, slot: WebhookSlot, body: JsonValue, *, times: int = 1
    ) -> list[WebhookRecord]:
        """POST `body` as-is to the slot's URL, `times` times (the provider resends)."""
        instance = self._instance(instance_id)
        url = instance.webhooks.get(slot)
        if url is None:
            raise LookupError(f"instance {instance_id} has no URL for webhook slot {slot}")
        return [await self._post(instance, slot, url, body) for _ in range(times)]

    async def receive(
        self, instance_id: str, content: payloads.Payload, *, chat_id: str, sender_id: str | None
    ) -> WebhookRecord:
        instance = self._instance(instance_id)
        body = payloads.received(
            instance_id=instance_id,
            connected_phone=instance.known_phone,
            connected_lid=instance.lid,
            chat_id=chat_id,
            sender_id=sender_id or chat_id,
            content=content,
        )
        body = _skewed(instance, body)
        (record,) = await self.post_webhook(instance_id, WebhookSlot.RECEIVED, body)
        return record

    async def emit_status(
        self, instance_id: str, message_id: str, status: str, *, chat_id: str
    ) -> WebhookRecord:
        body = payloads.message_status(
            instance_id=instance_id, message_id=message_id, status=status, chat_id=chat_id
        )
        body = _skewed(self._instance(instance_id), body)
        (record,) = await self.post_webhook(instance_id, WebhookSlot.MESSAGE_STATUS, body)
        return record

    async def emit_presence(self, instance_id: str, chat_id: str, status: str) -> WebhookRecord:
        instance = self._instance(instance_id)
        body = payloads.presence(
            instance_id=instance_id,
            connected_phone=instance.known_phone,
            connected_lid=instance.lid,
            chat_id=chat_id,
            status=status,
        )
        body = _skewed(instance, body)
        (record,) = await self.post_webhook(instance_id, WebhookSlot.CHAT_PRESENCE, body)
        return record

    # --- the provider API -------------------------------------------------------------------

    async def handle(
        self, request: ProviderRequest, client_gone: Callable[[], Awaitable[None]]
    ) -> ProviderReply:
        """Answer one provider call like W-API would, after faults and latency."""
        instance_id = request.query.get("instanceId")
        if instance_id is not None and request.operation in _SEND_CONTENT_FIELD:
            self._sends[instance_id] += 1
        self._calls.append(
            CallRecord(
                at=time.time(),
                method=request.method,
                path=request.path,
                operation=request.operation,
                instance_id=instance_id,
                query=request.query,
                body=request.body,
            )
        )
        self._notify()
        instance = self._instances.get(instance_id) if instance_id else None
        if instance is not None and instance.latency_s > 0:
            await asyncio.sleep(instance.latency_s)
        fault = self._take_fault(instance, request.operation)
        if fault is not None:
            return await self._fault_reply(fault, client_gone)
        token = _bearer(request.authorization)
        if token is None:
            return _error(401, "Token de autenticação ausente.")
        if instance is None:
            return _error(404, "Instância não encontrada.")
        if token != instance.spec.token.get_secret_value():
            return _error(401, "Token inválido para esta instância.")
        reply = self._dispatch(instance, request)
        if reply.after_send is not None:
            return await self._answer_send(instance, reply, client_gone)
        return reply

    async def _answer_send(
        self,
        instance: _Instance,
        reply: ProviderReply,
        client_gone: Callable[[], Awaitable[None]],
    ) -> ProviderReply:
        receipts = reply.after_send
        if receipts is None:
            return reply
        if instance.receipts_before_answer:
            await receipts
        else:
            self._spawn(receipts)
        if instance.send_answer_delay_s > 0:
            await asyncio.sleep(instance.send_answer_delay_s)
        if instance.hold_send_answers:
            instance.held += 1
            try:
                await self._hold(instance.release, client_gone)
            finally:
                instance.held -= 1
        return reply

    def _dispatch(self, instance: _Instance, request: ProviderRequest) -> ProviderReply:
        route = self._route(request.operation)
        if route is None:
            return _error(404, "Rota não encontrada.")
        method, handler = route
        if request.method != method:
            return _error(405, "Método não permitido.")
        return handler(instance, request)

    def _route(self, operation: str) -> tuple[str, _Handler] | None:
        if operation in _SEND_CONTENT_FIELD:
            return "POST", self._send
        if operation.startswith("update-webhook-"):
            return "PUT", self._update_webhook
        getters: dict[str, _Handler] = {
            "status-instance": self._status,
            "fetch-instance": self._fetch,
            "device": self._device,
            "restart": self._restart,
            "disconnect": self._disconnect,
            "qr-code": self._qr_code,
            "pairing-code": self._pairing_code,
            "fetch-webhook-logs": self._webhook_logs,
        }
        handler = getters.get(operation)
        return None if handler is None else ("GET", handler)

    def _status(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        # Like the real provider: no phone here, ever (WAPI.md, grade A/B).
        return ProviderReply(
            200, {"instanceId": instance.instance_id, "connected": instance.connected}
        )

    def _fetch(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        body: dict[str, JsonValue] = {
            "instanceId": instance.instance_id,
            "instanceName": instance.spec.name,
            "connected": instance.connected,
            "messagesSent": self._sends[instance.instance_id],
        }
        if instance.known_phone is not None:
            body["connectedPhone"] = instance.known_phone
        for slot in WebhookSlot:
            body[_webhook_field(slot)] = instance.webhooks.get(slot)
        return ProviderReply(200, body)

    def _device(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        body: dict[str, JsonValue] = {
            "lid": instance.lid,
            "name": instance.spec.name,
            "platform": "android",
            "status": "connected" if instance.connected else "disconnected",
            "isBusiness": False,
        }
        if instance.known_phone is not None:
            body["connectedPhone"] = instance.known_phone
        return ProviderReply(200, body)

    def _restart(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        self._set_connected(instance, connected=False)
        if instance.restart_mode is RestartMode.COMEBACK:
            self._spawn(self._come_back(instance, instance.restart_delay_s))
        return ProviderReply(200, {"error": False, "message": "Instância reiniciada com sucesso."})

    async def _come_back(self, instance: _Instance, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._set_connected(instance, connected=True)

    def _disconnect(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        self._set_connected(instance, connected=False)
        return ProviderReply(
            200, {"error": False, "message": "Instância desconectada com sucesso."}
        )

    def _qr_code(self, instance: _Instance, _request: ProviderRequest) -> ProviderReply:
        if instance.connected:
            return ProviderReply(200, {"connected": True})
        now = time.monotonic()
        if instance.qr_first_at is None:
            instance.qr_first_at = now
            if instance.qr_scan_after_s is not None:
                self._timer(instance, instance.qr_scan_after_s, self._scan_if_waiting)
        if instance.qr_rotate_s > 0:
            generation = int((now - instance.qr_first_at) / instance.qr_rotate_s)
        else:
            generation = instance.qr_served
        instance.qr_served += 1
        return ProviderReply(200, {"qrcode": _qr_image(instance, generation)})

    def _pairing_code(self, instance: _Instance, request: ProviderRequest) -> ProviderReply:
        digits = "".join(ch for ch in request.query.get("phoneNumber", "") if ch.isdigit())
        if not digits:
            return _error(400, "O número de telefone é obrigatório.")
        # A connected session still gets a code (W-API's answer there is unknown, grade D);
        # entering it changes nothing while the session stays connected.
        code = "".join(secrets.choice(_PAIRING_ALPHABET) for _ in range(8))
        instance.pairing_code, instance.pairing_phone = f"{code[:4]}-{code[4:]}", digits
        if instance.pairing_enter_after_s is not None:
            self._timer(instance, instance.pairing_enter_after_s, self._enter_if_waiting)
        return ProviderReply(200, {"pairingCode": instance.pairing_code})

    def _scan_if_waiting(self, instance: _Instance) -> None:
        if not instance.connected and instance.qr_served > 0:
            self._pair(instance, instance.phone)

    def _enter_if_waiting(self, instance: _Instance) -> None:
        if not instance.connected and instance.pairing_code is not None:
            self._pair(instance, instance.pairing_phone)

    def _pair(self, instance: _Instance, phone: str | None) -> None:
        instance.phone = phone
        self._set_connected(instance, connected=True)

    def _webhook_logs(self, instance: _Instance, request: ProviderRequest) -> ProviderReply:
        posted = self.webhooks(WebhookFilter(instance_id=instance.instance_id))
        return ProviderReply(
            200,
            {
                "page": request.query.get("page", "1"),
                "total": len(posted),
                "data": [record.model_dump(mode="json") for record in posted],
            },
        )

    def _update_webhook(self, instance: _Instance, request: ProviderRequest) -> ProviderReply:
        body = request.body
        try:
            slot = WebhookSlot(request.operation.removeprefix("update-webhook-"))
        except ValueError:
            return _error(404, "Rota não encontrada.")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            return _error(400, "O campo value é obrigatório.")
        instance.webhooks[slot] = value
        return ProviderReply(200, {"error": False})

    def _send(self, instance: _Instance, request: ProviderRequest) -> ProviderReply:
        operation = request.operation
        fields = request.body if isinstance(request.body, dict) else {}
        phone = fields.get("phone")
        if not isinstance(phone, str) or not phone:
            return _error(400, payloads.PHONE_REQUIRED_MESSAGE)
        content_field = _SEND_CONTENT_FIELD[operation]
        if not fields.get(content_field):
            return _error(400, f"O campo {content_field} é obrigatório.")
        if operation == "send-document" and not fields.get("extension"):
            return _error(400, "O campo extension é obrigatório.")
        if not instance.connected:
            return _error(400, "Instância desconectada.")
        message_id = payloads.new_message_id()
        return ProviderReply(
            200,
            {
                "instanceId": instance.instance_id,
                "messageId": message_id,
                "insertedId": uuid.uuid4().hex,
            },
            after_send=self._after_send(instance, operation, fields, message_id, phone),
        )

    async def _after_send(
        self,
        instance: _Instance,
        operation: str,
        fields: dict[str, JsonValue],
        message_id: str,
        chat_id: str,
    ) -> None:
        mode = instance.effective_delivery
        if mode is DeliveryMode.SILENT:
            return
        echo = payloads.delivery(
            instance_id=instance.instance_id,
            connected_phone=instance.known_phone,
            connected_lid=instance.lid,
            chat_id=chat_id,
            content=payloads.content_for_send(operation, fields),
            message_id=message_id,
        )
        await self._post_if_configured(instance, WebhookSlot.DELIVERY, echo)
        if mode is not DeliveryMode.PROGRESS:
            return
        for status in _STATUS_PROGRESSION:
            if instance.status_step_delay_s > 0:
                await asyncio.sleep(instance.status_step_delay_s)
            body = payloads.message_status(
                instance_id=instance.instance_id,
                message_id=message_id,
                status=status,
                chat_id=chat_id,
            )
            await self._post_if_configured(instance, WebhookSlot.MESSAGE_STATUS, body)

    # --- internals --------------------------------------------------------------------------

    def _instance(self, instance_id: str) -> _Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise LookupError(f"unknown simulated instance {instance_id!r}") from None

    def _set_connected(self, instance: _Instance, *, connected: bool) -> None:
        if instance.connected == connected:
            return
        instance.connected = connected
        # A new session (or a new drop) starts a new QR / pairing cycle.
        instance.qr_first_at, instance.qr_served = None, 0
        instance.pairing_code, instance.pairing_phone = None, None
        for timer in instance.timers:
            timer.cancel()
        instance.timers.clear()
        if connected:
            body = payloads.connected(
                instance_id=instance.instance_id, connected_phone=instance.known_phone
            )
            self._spawn(self._post_if_configured(instance, WebhookSlot.CONNECTED, body))
        else:
            body = payloads.disconnected(instance_id=instance.instance_id)
            self._spawn(self._post_if_configured(instance, WebhookSlot.DISCONNECTED, body))

    def _take_fault(self, instance: _Instance | None, operation: str) -> Fault | None:
        if instance is not None and _applies(instance.fault, operation):
            fault = instance.fault
            instance.fault_left = _decrement(instance.fault_left)
            if instance.fault_left == 0:
                instance.fault, instance.fault_left = None, None
            return fault
        if _applies(self._global_fault, operation):
            fault = self._global_fault
            self._global_fault_left = _decrement(self._global_fault_left)
            if self._global_fault_left == 0:
                self._global_fault, self._global_fault_left = None, None
            return fault
        return None

    async def _fault_reply(  # noqa: PLR0911 - one answer per fault kind reads clearest
        self, fault: Fault, client_gone: Callable[[], Awaitable[None]]
    ) -> ProviderReply:
        message = fault.message or "Erro simulado."
        if fault.kind is FaultKind.DISCONNECT:
            return ProviderReply(0, close_connection=True)
        if fault.kind is FaultKind.HANG:
            await self._hang(client_gone)
            return _error(503, "A chamada ficou sem resposta.")
        if fault.kind in _GATEWAY_PAGES:
            status, title = _GATEWAY_PAGES[fault.kind]
            return ProviderReply(fault.status_code or status, html=_gateway_page(title))
        if fault.kind is FaultKind.SERVER_ERROR:
            return _error(fault.status_code or 500, fault.message or "Internal server error")
        if fault.kind is FaultKind.REJECT:
            return _error(fault.status_code or 400, message)
        if fault.kind is FaultKind.ERROR_BODY:
            return _error(fault.status_code or 200, message)
        if fault.kind is FaultKind.NO_MESSAGE_ID:
            return ProviderReply(fault.status_code or 200, {"error": False})
        return ProviderReply(fault.status_code or 200, html=_gateway_page("OK"))

    async def _hang(self, client_gone: Callable[[], Awaitable[None]]) -> None:
        await self._hold(None, client_gone)

    async def _hold(
        self, until: asyncio.Event | None, client_gone: Callable[[], Awaitable[None]]
    ) -> None:
        """Wait until `until` is set, the client gives up, or every hang is released."""
        waits = {
            asyncio.ensure_future(self._release_hangs.wait()),
            asyncio.ensure_future(client_gone()),
        }
        if until is not None:
            waits.add(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _post_if_configured(
        self, instance: _Instance, slot: WebhookSlot, body: JsonValue
    ) -> None:
        url = instance.webhooks.get(slot)
        if url is not None:
            await self._post(
                instance, slot, url, _skewed(instance, body) if isinstance(body, dict) else body
            )

    async def _flap(self, instance: _Instance, pairs: int, interval_s: float) -> None:
        for _ in range(pairs):
            self._set_connected(instance, connected=False)
            await asyncio.sleep(interval_s)
            self._set_connected(instance, connected=True)
            await asyncio.sleep(interval_s)

    def _timer(
        self, instance: _Instance, delay_s: float, action: Callable[[_Instance], None]
    ) -> None:
        async def fire() -> None:
            await asyncio.sleep(delay_s)
            instance.timers.discard(task)
            action(instance)

        task = self._spawn(fire())
        instance.timers.add(task)

    async def _post(
        self, instance: _Instance, slot: WebhookSlot, url: str, body: JsonValue
    ) -> WebhookRecord:
        if self._http is None:
            raise RuntimeError("the simulator engine is not started")
        status_code: int | None = None
        error: str | None = None
        async with instance.post_lock:
            try:
                response = await self._http.post(url, json=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                status_code = response.status_code
        event = body.get("event") if isinstance(body, dict) else None
        record = WebhookRecord(
            at=time.time(),
            instance_id=instance.instance_id,
            slot=slot,
            url=url,
            event=event if isinstance(event, str) else None,
            body=body,
            status_code=status_code,
            error=error,
        )
        self._webhooks.append(record)
        self._notify()
        return record

    def _spawn(self, job: Coroutine[object, object, object]) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_for(
        self, select: Callable[[], list[R]], count: int, timeout: float, what: str
    ) -> list[R]:
        found: list[R] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    found = select()
                    if len(found) >= count:
                        return found
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"waited {timeout}s for {count} {what}; saw {len(found)}") from None


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _applies(fault: Fault | None, operation: str) -> bool:
    return fault is not None and (fault.operations is None or operation in fault.operations)


def _decrement(left: int | None) -> int | None:
    return None if left is None else left - 1


def _webhook_field(slot: WebhookSlot) -> str:
    words = slot.value.split("-")
    return "webhook" + "".join(word.capitalize() for word in words) + "Url"


def _gateway_page(title: str) -> str:
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def _skewed(instance: _Instance, body: payloads.Payload) -> payloads.Payload:
    """`body` with the instance's clock skew added to its `moment` (whole seconds)."""
    moment = body.get("moment")
    if not instance.moment_offset_s or not isinstance(moment, int) or isinstance(moment, bool):
        return body
    return {**body, "moment": moment + round(instance.moment_offset_s)}


def _code_key(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _qr_image(instance: _Instance, generation: int) -> str:
    """A real, scannable QR code (PNG data URI) that changes with `generation`."""
    text = f"2@{instance.instance_id},{instance.qr_seed},{generation}"
    return str(segno.make(text, error="l").png_data_uri(scale=3))
