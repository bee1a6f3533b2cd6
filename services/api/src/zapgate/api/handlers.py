"""HTTP routes: validate (the annotations), authenticate, call one use case, shape the answer.

Every refusal is an `ErrorBody` with a stable `code` and a pt-BR `message` (errors.py); every
request logs one canonical line (`canonical_line`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, cast

import structlog
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zapgate.api.domain import IDEMPOTENCY_KEY_PATTERN, ApiErrorCode, Caller, Subscription
from zapgate.api.models import (
    INSTANCE_EXAMPLE,
    ErrorBody,
    InstanceList,
    Message,
    SendAudio,
    SendDocument,
    SendImage,
    SendText,
    SendVideo,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionPublic,
)
from zapgate.api.service import Refusal, RefusalKind
from zapgate.contracts.health import InstanceHealth
from zapgate.contracts.sending import MessageKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from zapgate.api.models import SendOptions
    from zapgate.api.outbound import Subscriptions
    from zapgate.api.service import ApiService, Authenticator, RateLimits

_log = structlog.get_logger("zapgate.api")
MAX_WAIT_S = 30.0
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key made with `zapgate-api keys create` (`zgk_...`).",
)


@dataclass(frozen=True, slots=True)
class ApiRuntime:
    """What the routes use, built once by `app.running_api` (or by a test)."""

    service: ApiService
    auth: Authenticator
    limits: RateLimits
    subscriptions: Subscriptions


def runtime(request: Request) -> ApiRuntime:
    return cast("ApiRuntime", request.app.state.runtime)


async def canonical_line(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: one `api_request` line per request, a fresh `request_id` bound for its logs."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex)
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    _log.info(
        "api_request",
        method=request.method,
        route=getattr(route, "path", None),
        status=response.status_code,
        key_id=getattr(request.state, "key_id", None),
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return response


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller behind the bearer key, after its rate limit (401, 429 otherwise)."""
    api = runtime(request)
    caller = await api.auth.authenticate(credentials.credentials if credentials else None)
    request.state.key_id = caller.key_id
    await api.limits.admit(caller.key_id)
    return caller


CallerDep = Annotated[Caller, Depends(authenticated)]
InstancePath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_\-]+$",
        examples=["loja-centro"],
        description="The W-API instance id as registered with health.",
    ),
]
CommandPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_\-:]+$",
        examples=["3f9a1c2b4d5e-pedido-1234"],
        description="The command id the send answered with.",
    ),
]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        examples=["pedido-1234"],
        description="Your id for this request: repeating it never sends twice (scoped to "
        "your API key).",
    ),
]
SubscriptionPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=40,
        pattern=r"^sub_[0-9a-f]+$",
        examples=["sub_5b0c2e7f9a1d4c3b"],
    ),
]
Wait = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        examples=[10],
        description="Seconds to wait for the outcome (0: answer 202 at once; at most 30).",
    ),
]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


_COMMON = (401, 422, 429, 503)
_SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Message, "description": "With `wait`: the sender's final decision."},
    **_errors(*_COMMON, 403),
}
router = APIRouter(prefix="/v1")


async def _send(  # noqa: PLR0913 - the route's parts, each named
    *,
    request: Request,
    response: Response,
    caller: Caller,
    instance_id: str,
    kind: MessageKind,
    body: SendOptions,
    idempotency_key: str,
    wait: float,
) -> Message:
    sent = await runtime(request).service.send(
        caller, instance_id, kind, body, idempotency_key=idempotency_key, wait=wait
    )
    response.status_code = status.HTTP_200_OK if sent.final else status.HTTP_202_ACCEPTED
    response.headers["Location"] = sent.message.status_url
    return sent.message


_SEND_DOC = (
    "Sends one {kind} message through `instance_id`. Answers 202 with the command id and its "
    "status URL; with `wait` (up to 30 s) it answers 200 with the sender's decision once "
    "there is one (`sent`, `failed` with its code such as `SESSION_INCOMPLETE`, "
    "`uncertain`), or 202 with what is known when the time runs out. Repeating the request "
    "with the same `Idempotency-Key` never sends twice; the same key with another body is "
    "refused with 422 `IDEMPOTENCY_KEY_REUSED`."
)


@router.post(
    "/instances/{instance_id}/messages/text",
    status_code=202,
    responses=_SEND_RESPONSES,
    summary="Send a text message",
    description=_SEND_DOC.format(kind="text"),
    tags=["messages"],
)
async def send_text(  # noqa: PLR0913 - FastAPI reads each part from its parameter
    *,
    request: Request,
    response: Response,
    caller: CallerDep,
    instance_id: InstancePath,
    body: SendText,
    idempotency_key: IdempotencyKey,
    wait: Wait = 0,
) -> Message:
    return await _send(
        request=request,
        response=response,
        caller=caller,
        instance_id=instance_id,
        kind=MessageKind.TEXT,
        body=body,
        idempotency_key=idempotency_key,
        wait=wait,
    )


@router.post(
    "/instances/{instance_id}/messages/image",
    status_code=202,
    responses=_SEND_RESPONSES,
    summary="Send an image",
    description=_SEND_DOC.format(kind="image"),
    tags=["messages"],
)
async def send_image(  # noqa: PLR0913 - FastAPI reads each part from its parameter
    *,
    request: Request,
    response: Response,
    caller: CallerDep,
    instance_id: InstancePath,
    body: SendImage,
    idempotency_key: IdempotencyKey,
    wait: Wait = 0,
) -> Message:
    return await _send(
        request=request,
        response=response,
        caller=caller,
        instance_id=instance_id,
        kind=MessageKind.IMAGE,
        body=body,
        idempotency_key=idempotency_key,
        wait=wait,
    )


@router.post(
    "/instances/{instance_id}/messages/audio",
    status_code=202,
    responses=_SEND_RESPONSES,
    summary="Send an audio message",
    description=_SEND_DOC.format(kind="audio"),
    tags=["messages"],
)
async def send_audio(  # noqa: PLR0913 - FastAPI reads each part from its parameter
    *,
    request: Request,
    response: Response,
    caller: CallerDep,
    instance_id: InstancePath,
    body: SendAudio,
    idempotency_key: IdempotencyKey,
    wait: Wait = 0,
) -> Message:
    return await _send(
        request=request,
        response=response,
        caller=caller,
        instance_id=instance_id,
        kind=MessageKind.AUDIO,
        body=body,
        idempotency_key=idempotency_key,
        wait=wait,
    )


@router.post(
    "/instances/{instance_id}/messages/video",
    status_code=202,
    responses=_SEND_RESPONSES,
    summary="Send a video",
    description=_SEND_DOC.format(kind="video"),
    tags=["messages"],
)
async def send_video(  # noqa: PLR0913 - FastAPI reads each part from its parameter
    *,
    request: Request,
    response: Response,
    caller: CallerDep,
    instance_id: InstancePath,
    body: SendVideo,
    idempotency_key: IdempotencyKey,
    wait: Wait = 0,
) -> Message:
    return await _send(
        request=request,
        response=response,
        caller=caller,
        instance_id=instance_id,
        kind=MessageKind.VIDEO,
        body=body,
        idempotency_key=idempotency_key,
        wait=wait,
    )


@router.post(
    "/instances/{instance_id}/messages/document",
    status_code=202,
    responses=_SEND_RESPONSES,
    summary="Send a document",
    description=_SEND_DOC.format(kind="document"),
    tags=["messages"],
)
async def send_document(  # noqa: PLR0913 - FastAPI reads each part from its parameter
    *,
    request: Request,
    response: Response,
    caller: CallerDep,
    instance_id: InstancePath,
    body: SendDocument,
    idempotency_key: IdempotencyKey,
    wait: Wait = 0,
) -> Message:
    return await _send(
        request=request,
        response=response,
        caller=caller,
        instance_id=instance_id,
        kind=MessageKind.DOCUMENT,
        body=body,
        idempotency_key=idempotency_key,
        wait=wait,
    )


@router.get(
    "/messages/{command_id}",
    responses=_errors(*_COMMON, 404),
    summary="Read a message: its outcome and status timeline",
    description="`accepted` until the sender decides; then the outcome (`sent`, `delivered`, "
    "`read`, `played`, `failed`, `uncertain`, `held`) and every status reached with its time. "
    "Another API key's command answers 404.",
    tags=["messages"],
)
async def get_message(request: Request, caller: CallerDep, command_id: CommandPath) -> Message:
    return await runtime(request).service.get_message(caller, command_id)


@router.post(
    "/messages/{command_id}/retry",
    responses=_errors(*_COMMON, 404, 409),
    summary="Retry a failed message as a new command",
    description="Only a `failed` message can be retried (409 `NOT_RETRYABLE` otherwise). The "
    "new command is named by your `Idempotency-Key`, goes through the preflight again and is "
    "linked to the original (`retry_of`). Repeating it returns the same new command.",
    tags=["messages"],
)
async def retry_message(
    request: Request,
    caller: CallerDep,
    command_id: CommandPath,
    idempotency_key: IdempotencyKey,
) -> Message:
    return await runtime(request).service.retry(caller, command_id, idempotency_key)


@router.delete(
    "/messages/{command_id}",
    responses=_errors(*_COMMON, 404, 409),
    summary="Cancel a held message",
    description="A message `held` for its instance to recover fails with `CANCELLED` and is "
    "never sent. A message already decided answers 409 `NOT_CANCELLABLE`.",
    tags=["messages"],
)
async def cancel_message(request: Request, caller: CallerDep, command_id: CommandPath) -> Message:
    return await runtime(request).service.cancel(caller, command_id)


@router.get(
    "/instances",
    responses=_errors(401, 429, 503),
    summary="List the instances this key may use, with their health",
    tags=["instances"],
)
async def list_instances(request: Request, caller: CallerDep) -> InstanceList:
    return InstanceList(instances=await runtime(request).service.instances(caller))


@router.get(
    "/instances/{instance_id}",
    responses={
        200: {"content": {"application/json": {"example": INSTANCE_EXAMPLE}}},
        **_errors(*_COMMON, 403, 404),
    },
    summary="Read one instance's health",
    description="State (`connected`, `degraded` with its reason, `disconnected`, `unknown`), "
    "phone, and the times of the last check, restart attempt and outage.",
    tags=["instances"],
)
async def get_instance(
    request: Request, caller: CallerDep, instance_id: InstancePath
) -> InstanceHealth:
    return await runtime(request).service.instance(caller, instance_id)


def _public(subscription: Subscription) -> SubscriptionPublic:
    return SubscriptionPublic(
        subscription_id=subscription.subscription_id,
        url=subscription.url,
        events=sorted(subscription.events),
    )


@router.post(
    "/subscriptions",
    status_code=201,
    responses=_errors(401, 422, 429, 503),
    summary="Subscribe a URL to your events (outcomes, status changes, received messages)",
    description="Events are POSTed as JSON `{id, type, timestamp, data}` signed per Standard "
    "Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`, HMAC-SHA256 with the "
    "returned `secret`). Anything but a 2xx is retried with backoff for at least 24 hours; "
    "`webhook-id` stays the same across retries, so dedupe on it.",
    tags=["subscriptions"],
)
async def create_subscription(
    request: Request, caller: CallerDep, body: SubscriptionCreate
) -> SubscriptionCreated:
    made = await runtime(request).subscriptions.create(caller, str(body.url), body.events)
    return SubscriptionCreated(**_public(made).model_dump(), secret=made.secret)


@router.get(
    "/subscriptions",
    responses=_errors(401, 429, 503),
    summary="List your subscriptions (never their secrets)",
    tags=["subscriptions"],
)
async def list_subscriptions(request: Request, caller: CallerDep) -> SubscriptionList:
    found = await runtime(request).subscriptions.list_for(caller)
    return SubscriptionList(subscriptions=[_public(item) for item in found])


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    responses=_errors(401, 404, 422, 429, 503),
    summary="Remove a subscription (pending retries to it stop)",
    tags=["subscriptions"],
)
async def remove_subscription(
    request: Request, caller: CallerDep, subscription_id: SubscriptionPath
) -> Response:
    if not await runtime(request).subscriptions.remove(caller, subscription_id):
        raise Refusal.of(RefusalKind.NOT_FOUND, ApiErrorCode.NOT_FOUND, subscription_id)
    return Response(status_code=204)
