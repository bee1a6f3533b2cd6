"""`WapiClient`: the W-API port over one shared `httpx.AsyncClient`.

One client (one connection pool) serves every instance: credentials travel with each call.
The token goes only into the `Authorization` header of the request; it is never logged, never
part of a URL, and never in a result or failure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Self, TypeVar

import httpx
import structlog

from zapgate.wapi import responses
from zapgate.wapi.failures import ProviderFailure, is_failure
from zapgate.wapi.results import Reachable, WebhooksConfigured
from zapgate.wapi.transport_errors import failure_from_exception
from zapgate.wapi.webhook_slots import ALL_WEBHOOK_SLOTS, WebhookSlot

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from zapgate.wapi.credentials import InstanceCredentials
    from zapgate.wapi.results import (
        Acknowledged,
        DeviceInfo,
        InstanceDetails,
        InstanceStatus,
        PairingCode,
        QrCode,
        SendAccepted,
        WebhookLogs,
    )

DEFAULT_BASE_URL = "https://api.w-api.app/v1"
# Connect fails fast (a refused connect is certain "not sent", cheap to retry later); read
# waits longer because a send answered late is still far better than an unknown outcome.
DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=10.0, pool=3.0)
# Bounded so a health tick over thousands of instances queues in the pool (PoolTimeout is a
# certain "not sent") instead of opening thousands of sockets to the provider.
DEFAULT_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32)

_log = structlog.get_logger("zapgate.wapi.client")

T = TypeVar("T")


class WapiClient:
    """The W-API adapter. Build once per process (in a lifespan), share, `aclose()` at exit.

    `transport` lets a caller swap httpx's transport (e.g. an aiohttp-based one, or a
    benchmark stub); `http_client` hands in a fully built client that this adapter will not
    close. With a custom transport, `limits` must be set on that transport instead.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("pass either http_client or transport, not both")
        self._base_url = base_url.rstrip("/")
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout, limits=limits, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"WapiClient(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def ping(self) -> Reachable | ProviderFailure:
        started = time.perf_counter()
        try:
            response = await self._http.get(self._base_url + "/")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return failure_from_exception("ping", exc)
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
            classified = responses.classify("ping", response.status_code, response.content)
            if not isinstance(classified, dict):
                return classified
        return Reachable(latency_ms=latency_ms)

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure:
        return await self._call(
            credentials, "GET", "/instance/status-instance", responses.parse_status
        )

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure:
        return await self._call(
            credentials, "GET", "/instance/fetch-instance", responses.parse_details
        )

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure:
        return await self._call(credentials, "GET", "/instance/device", responses.parse_device)

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        return await self._call(
            credentials, "GET", "/instance/restart", responses.parse_acknowledged
        )

    async def disconnect(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        return await self._call(
            credentials, "GET", "/instance/disconnect", responses.parse_acknowledged
        )

    async def qr_code(self, credentials: InstanceCredentials) -> QrCode | ProviderFailure:
        return await self._call(
            credentials,
            "GET",
            "/instance/qr-code",
            responses.parse_qr_code,
            params={"image": "disable"},
        )

    async def pairing_code(
        self, credentials: InstanceCredentials, phone_number: str
    ) -> PairingCode | ProviderFailure:
        return await self._call(
            credentials,
            "GET",
            "/instance/pairing-code",
            responses.parse_pairing_code,
            params={"phoneNumber": phone_number},
        )

    async def update_webhook(
        self, credentials: InstanceCredentials, slot: WebhookSlot, url: str
    ) -> Acknowledged | ProviderFailure:
        return await self._call(
            credentials,
            "PUT",
            f"/webhook/{slot.operation}",
            responses.parse_acknowledged,
            body={"value": url},
        )

    async def configure_webhooks(
        self,
        credentials: InstanceCredentials,
        url: str,
        slots: Iterable[WebhookSlot] | None = None,
    ) -> WebhooksConfigured | ProviderFailure:
        chosen = ALL_WEBHOOK_SLOTS if slots is None else tuple(slots)
        # Sequential on purpose: six tiny calls, and stopping at the first failure keeps the
        # provider from receiving the rest of a configuration that is already half wrong.
        for slot in chosen:
            result = await self.update_webhook(credentials, slot, url)
            if is_failure(result):
                return result
        return WebhooksConfigured(url=url, slots=chosen)

    async def fetch_webhook_logs(
        self, credentials: InstanceCredentials, *, per_page: int = 50, page: int = 1
    ) -> WebhookLogs | ProviderFailure:
        return await self._call(
            credentials,
            "GET",
            "/webhook/fetch-webhook-logs",
            responses.parse_webhook_logs,
            params={"perPage": str(per_page), "page": str(page)},
        )

    async def send_text(
        self,
        credentials: InstanceCredentials,
        phone: str,
        message: str,
        *,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        body = _send_body(phone, quoted_message_id, delay_message, message=message)
        return await self._send(credentials, "send-text", body)

    async def send_image(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        image: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        body = _send_body(phone, quoted_message_id, delay_message, image=image, caption=caption)
        return await self._send(credentials, "send-image", body)

    async def send_audio(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        audio: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        body = _send_body(phone, quoted_message_id, delay_message, audio=audio, caption=caption)
        return await self._send(credentials, "send-audio", body)

    async def send_video(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        video: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        body = _send_body(phone, quoted_message_id, delay_message, video=video, caption=caption)
        return await self._send(credentials, "send-video", body)

    async def send_document(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        document: str,
        extension: str,
        *,
        file_name: str | None = None,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        body = _send_body(
            phone,
            quoted_message_id,
            delay_message,
            document=document,
            extension=extension,
            fileName=file_name,
            caption=caption,
        )
        return await self._send(credentials, "send-document", body)

    async def _send(
        self, credentials: InstanceCredentials, operation: str, body: dict[str, object]
    ) -> SendAccepted | ProviderFailure:
        return await self._call(
            credentials, "POST", f"/message/{operation}", responses.parse_send, body=body
        )

    async def _call(  # noqa: PLR0913 - the one place every call goes through
        self,
        credentials: InstanceCredentials,
        method: str,
        path: str,
        parse: Callable[[str, responses.JsonObject], T | ProviderFailure],
        *,
        params: dict[str, str] | None = None,
        body: dict[str, object] | None = None,
    ) -> T | ProviderFailure:
        operation = path.rsplit("/", 1)[-1]
        started = time.perf_counter()
        status_code: int | None = None
        result: T | ProviderFailure
        try:
            response = await self._http.request(
                method,
                self._base_url + path,
                params={"instanceId": credentials.instance_id, **(params or {})},
                headers={"Authorization": f"Bearer {credentials.token.get_secret_value()}"},
                json=body,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            result = failure_from_exception(operation, exc)
        else:
            status_code = response.status_code
            classified = responses.classify(operation, status_code, response.content)
            result = parse(operation, classified) if isinstance(classified, dict) else classified
        _log_call(credentials.instance_id, operation, status_code, started, result)
        return result


def _send_body(
    phone: str,
    quoted_message_id: str | None,
    delay_message: int | None,
    **fields: str | None,
) -> dict[str, object]:
    # Optional fields are left out rather than sent as null: grade-B facts only say what the
    # provider accepts when present.
    body: dict[str, object] = {"phone": phone}
    body.update({key: value for key, value in fields.items() if value is not None})
    if quoted_message_id is not None:
        body["messageId"] = quoted_message_id
    if delay_message is not None:
        body["delayMessage"] = delay_message
    return body


def _log_call(
    instance_id: str,
    operation: str,
    status_code: int | None,
    started: float,
    result: object,
) -> None:
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    fields = {
        "instance_id": instance_id,
        "operation": operation,
        "status_code": status_code,
        "latency_ms": latency_ms,
    }
    if is_failure(result):
        _log.warning(
            "wapi.call.failed",
            code=result.code,
            detail=result.detail,
            uncertain=result.uncertain,
            **fields,
        )
    else:
        _log.debug("wapi.call", **fields)
