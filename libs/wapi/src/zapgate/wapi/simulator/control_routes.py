"""`/_sim/...`: drive a simulator that runs in another process, over JSON.

Mirrors the in-process `Simulator` handle. Waits are long-polls answered when the condition
holds (200) or at the timeout (408), never by client-side polling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, JsonValue, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zapgate.wapi.simulator import payloads
from zapgate.wapi.simulator.models import (
    CallFilter,
    Fault,
    InstancePatch,
    InstanceSpec,
    WebhookFilter,
)
from zapgate.wapi.webhook_slots import WebhookSlot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from starlette.requests import Request

    from zapgate.wapi.simulator.engine import SimulatorEngine


class WebhookUrl(BaseModel):
    url: str | None


class RawWebhook(BaseModel):
    body: JsonValue
    times: int = Field(default=1, ge=1)


class IncomingText(BaseModel):
    chat_id: str
    text: str
    sender_id: str | None = None


class StatusChange(BaseModel):
    message_id: str
    status: str
    chat_id: str


class PresenceChange(BaseModel):
    chat_id: str
    status: str


class FlapRequest(BaseModel):
    pairs: int = Field(ge=0, le=1000)
    interval_s: float = Field(default=0.0, ge=0, le=3600)


class ScanRequest(BaseModel):
    phone: str | None = None


class PairingEntry(BaseModel):
    code: str | None = None


class CallWait(CallFilter):
    count: int = Field(default=1, ge=1)
    timeout: float = Field(default=5.0, gt=0, le=300)


class WebhookWait(WebhookFilter):
    count: int = Field(default=1, ge=1)
    timeout: float = Field(default=5.0, gt=0, le=300)


def _dump(items: Sequence[BaseModel]) -> list[JsonValue]:
    return [item.model_dump(mode="json") for item in items]


def _guarded(
    endpoint: Callable[[Request], Awaitable[JsonValue]],
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            result = await endpoint(request)
        except ValidationError as exc:
            return JSONResponse({"error": exc.errors(include_url=False)}, status_code=422)
        except ValueError as exc:  # e.g. an unknown webhook slot in the path
            return JSONResponse({"error": str(exc)}, status_code=422)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except TimeoutError as exc:
            return JSONResponse({"error": str(exc)}, status_code=408)
        return JSONResponse(result)

    return run


def control_routes(engine: SimulatorEngine) -> list[Route]:  # noqa: C901, PLR0915 - a flat route table
    async def reset(_request: Request) -> JsonValue:
        await engine.reset()
        return {"ok": True}

    async def settle(_request: Request) -> JsonValue:
        await engine.settle()
        return {"ok": True}

    async def add_instance(request: Request) -> JsonValue:
        engine.add_instance(InstanceSpec.model_validate_json(await request.body()))
        return {"ok": True}

    async def configure(request: Request) -> JsonValue:
        patch = InstancePatch.model_validate_json(await request.body())
        engine.configure(request.path_params["instance_id"], patch)
        return {"ok": True}

    async def fault(request: Request) -> JsonValue:
        instance_id = request.path_params.get("instance_id")
        if request.method == "DELETE":
            engine.set_fault(instance_id, None)
        else:
            engine.set_fault(instance_id, Fault.model_validate_json(await request.body()))
        return {"ok": True}

    async def complete_restart(request: Request) -> JsonValue:
        engine.complete_restart(request.path_params["instance_id"])
        return {"ok": True}

    async def state(request: Request) -> JsonValue:
        return engine.state(request.path_params["instance_id"]).model_dump(mode="json")

    async def release_answers(request: Request) -> JsonValue:
        return {"released": engine.release_answers(request.path_params.get("instance_id"))}

    async def flap(request: Request) -> JsonValue:
        wanted = FlapRequest.model_validate_json(await request.body() or b"{}")
        engine.flap(
            request.path_params["instance_id"], pairs=wanted.pairs, interval_s=wanted.interval_s
        )
        return {"ok": True}

    async def scan_qr(request: Request) -> JsonValue:
        scan = ScanRequest.model_validate_json(await request.body() or b"{}")
        engine.scan_qr(request.path_params["instance_id"], phone=scan.phone)
        return {"ok": True}

    async def enter_pairing_code(request: Request) -> JsonValue:
        entry = PairingEntry.model_validate_json(await request.body() or b"{}")
        engine.enter_pairing_code(request.path_params["instance_id"], entry.code)
        return {"ok": True}

    async def webhook_slot(request: Request) -> JsonValue:
        instance_id = request.path_params["instance_id"]
        slot = WebhookSlot(request.path_params["slot"])
        if request.method == "PUT":
            engine.set_webhook(
                instance_id, slot, WebhookUrl.model_validate_json(await request.body()).url
            )
            return {"ok": True}
        raw = RawWebhook.model_validate_json(await request.body())
        return _dump(await engine.post_webhook(instance_id, slot, raw.body, times=raw.times))

    async def receive(request: Request) -> JsonValue:
        incoming = IncomingText.model_validate_json(await request.body())
        record = await engine.receive(
            request.path_params["instance_id"],
            payloads.text_content(incoming.text),
            chat_id=incoming.chat_id,
            sender_id=incoming.sender_id,
        )
        return record.model_dump(mode="json")

    async def status(request: Request) -> JsonValue:
        change = StatusChange.model_validate_json(await request.body())
        record = await engine.emit_status(
            request.path_params["instance_id"],
            change.message_id,
            change.status,
            chat_id=change.chat_id,
        )
        return record.model_dump(mode="json")

    async def presence(request: Request) -> JsonValue:
        change = PresenceChange.model_validate_json(await request.body())
        record = await engine.emit_presence(
            request.path_params["instance_id"], change.chat_id, change.status
        )
        return record.model_dump(mode="json")

    async def calls(request: Request) -> JsonValue:
        return _dump(engine.calls(CallFilter.model_validate(dict(request.query_params))))

    async def webhooks(request: Request) -> JsonValue:
        return _dump(engine.webhooks(WebhookFilter.model_validate(dict(request.query_params))))

    async def clear_records(_request: Request) -> JsonValue:
        engine.clear_records()
        return {"ok": True}

    async def wait_calls(request: Request) -> JsonValue:
        wait = CallWait.model_validate_json(await request.body())
        where = CallFilter(operation=wait.operation, instance_id=wait.instance_id)
        return _dump(await engine.wait_for_calls(where, wait.count, wait.timeout))

    async def wait_webhooks(request: Request) -> JsonValue:
        wait = WebhookWait.model_validate_json(await request.body())
        where = WebhookFilter.model_validate(
            wait.model_dump(include={"instance_id", "slot", "event", "where"})
        )
        return _dump(await engine.wait_for_webhooks(where, wait.count, wait.timeout))

    table: list[tuple[str, Callable[[Request], Awaitable[JsonValue]], list[str]]] = [
        ("/reset", reset, ["POST"]),
        ("/settle", settle, ["POST"]),
        ("/fault", fault, ["PUT", "DELETE"]),
        ("/instances", add_instance, ["POST"]),
        ("/instances/{instance_id}", configure, ["PATCH"]),
        ("/instances/{instance_id}", state, ["GET"]),
        ("/release-answers", release_answers, ["POST"]),
        ("/instances/{instance_id}/release-answers", release_answers, ["POST"]),
        ("/instances/{instance_id}/flap", flap, ["POST"]),
        ("/instances/{instance_id}/scan-qr", scan_qr, ["POST"]),
        ("/instances/{instance_id}/enter-pairing-code", enter_pairing_code, ["POST"]),
        ("/instances/{instance_id}/fault", fault, ["PUT", "DELETE"]),
        ("/instances/{instance_id}/complete-restart", complete_restart, ["POST"]),
        ("/instances/{instance_id}/webhooks/{slot}", webhook_slot, ["PUT", "POST"]),
        ("/instances/{instance_id}/receive", receive, ["POST"]),
        ("/instances/{instance_id}/status", status, ["POST"]),
        ("/instances/{instance_id}/presence", presence, ["POST"]),
        ("/calls", calls, ["GET"]),
        ("/calls/wait", wait_calls, ["POST"]),
        ("/webhooks", webhooks, ["GET"]),
        ("/webhooks/wait", wait_webhooks, ["POST"]),
        ("/records", clear_records, ["DELETE"]),
    ]
    return [Route(path, _guarded(endpoint), methods=methods) for path, endpoint, methods in table]
