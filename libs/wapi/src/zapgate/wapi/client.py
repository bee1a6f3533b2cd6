"""`WapiClient`: the W-API port over one shared aiohttp `ClientSession`.

One client (one connection pool) serves every instance: credentials travel with each call.
The token goes only into the `Authorization` header of the request; it is never logged, never
part of a URL, and never in a result or failure.

Why aiohttp directly (measured by `bench/provider_client.py`, see docs/benchmarks.md): against
the simulator at 50 concurrent workers, plain httpx 0.28 manages ~330 calls/s, httpx over
`httpx_aiohttp.AiohttpTransport` ~3,700 and aiohttp's `ClientSession` ~8,200 on our machines;
and the httpx-aiohttp transport translates "server disconnected" into `httpx.ConnectTimeout`,
which would make an uncertain send look certainly unsent. Here aiohttp's own exceptions are
classified (`transport_errors`).

Connection policy:
- at most `WapiLimits.total` calls in flight over one pool of as many connections (more calls
  queue, up to `WapiTimeouts.queue`), and at most `WapiLimits.per_instance` calls of one instance in
  flight (a slow instance cannot take the whole pool);
- idle connections are closed after `WapiLimits.keepalive_s` (4 s by default), below the
  common server idle timeouts (uvicorn and Node 5 s, nginx 75 s, AWS ALB 60 s), so the client,
  not the server, ends an idle connection;
- an idempotent read (`status-instance`, `fetch-instance`, `device`, `qr-code`,
  `fetch-webhook-logs`) whose exchange breaks before an answer ("server disconnected", a reset)
  is retried once, at once, on a fresh connection; nothing else is ever retried here: a send,
  restart, disconnect or pairing-code request is made exactly once per method call, and a
  broken exchange on it is an uncertain `ProviderTimeout`. aiohttp's own silent retry of
  "idempotent" HTTP methods is switched off because W-API restarts and disconnects on GET.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self, TypeVar

import aiohttp
import structlog
from yarl import URL

from zapgate.wapi import responses
from zapgate.wapi.failures import ProviderFailure, ProviderUnavailable, is_failure
from zapgate.wapi.metrics import OK, WapiMetrics
from zapgate.wapi.results import Reachable, WebhooksConfigured
from zapgate.wapi.transport_errors import failure_from_exception, is_broken_exchange
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
IDEMPOTENT_READS = frozenset(
    {"status-instance", "fetch-instance", "device", "qr-code", "fetch-webhook-logs"}
)
_SERVER_ERROR = 500
_JSON_HEADERS = {"Content-Type": "application/json"}

_log = structlog.get_logger("zapgate.wapi.client")

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class WapiTimeouts:
    """Seconds allowed for each phase of one provider call.

    - `connect`: opening a TCP (and TLS) connection. Fails fast: a refused connect is a certain
      "not sent" (`ProviderUnavailable`), cheap to retry later.
    - `pool`: waiting for a free slot of the instance, and for a connection once the call has
      one of the `WapiLimits.total` slots (opening it, then). Beyond it the call is
      `ProviderUnavailable`: nothing was sent.
    - `queue`: waiting for one of the `WapiLimits.total` slots, behind other instances' calls.
      Generous (our own queue, every call ahead ends within its own timeouts), but bounded,
      well below the sender's sending lease: a call recorded as made must not go out minutes
      later. Beyond it the call is `ProviderUnavailable`: nothing was sent.
    - `read`: the longest silence while waiting for or reading the answer. Longer, because a
      send answered late is far better than an unknown outcome (`ProviderTimeout`).
    - `total`: the whole exchange after the slot is taken, including writing a large media
      body; beyond it the outcome is unknown (`ProviderTimeout`).
    """

    connect: float = 3.0
    pool: float = 3.0
    queue: float = 30.0
    read: float = 10.0
    total: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WapiLimits:
    """How much of the provider one client may use at once.

    - `total`: calls in flight to the provider, every instance together, and the size of the
      connection pool; more calls queue, first come first served, up to `WapiTimeouts.queue`
      (nothing is sent while queued; callers bound their own concurrency: the sender's lanes,
      health's tick). A call never waits in aiohttp's pool, whose wait counts against the
      connect timeout, so a busy moment does not turn into a failed (and retried) send.
    - `per_instance`: calls of one instance in flight; more queue (within `WapiTimeouts.pool`).
    - `keepalive_s`: an idle pooled connection is closed after this many seconds. Keep it
      below the server's idle timeout: a connection the server closes while idle fails the next
      request sent on it ("server disconnected without sending a response").
    - `fresh_total`: one-shot connections open at once for retries of reads.
    """

    total: int = 64
    per_instance: int = 4
    keepalive_s: float = 4.0
    fresh_total: int = 8


DEFAULT_TIMEOUT = WapiTimeouts()
DEFAULT_LIMITS = WapiLimits()


class _SlotWaitTimeoutError(Exception):
    """No slot of the instance came free within the pool timeout."""


class _QueueWaitTimeoutError(_SlotWaitTimeoutError):
    """No slot of the total came free within the queue timeout."""


class _InstanceSlot:
    __slots__ = ("semaphore", "users")

    def __init__(self, size: int) -> None:
        self.semaphore = asyncio.Semaphore(size)
        self.users = 0


class _Slots:
    """At most `per_instance` calls of one instance and `total` calls in all in flight.

    A call first waits for its instance's slot (within the pool timeout: a slow instance
    cannot hold its callers forever), then queues for one of the `total` slots, first come
    first served, within the (longer) queue timeout: that queue is ours, nothing has been sent
    yet, and the calls ahead each end within the call's own timeouts. With `total` no larger
    than the connection pool, no call ever waits inside aiohttp's pool, where the connect
    timeout would turn a busy moment into a failed call. Per-instance entries live only while
    in use.
    """

    def __init__(self, per_instance: int, total: int) -> None:
        self._size = per_instance
        self._total = asyncio.Semaphore(total)
        self._held: dict[str, _InstanceSlot] = {}
        self.queued = 0

    async def acquire(self, instance_id: str, timeout: float, queue_timeout: float) -> None:
        """Take a slot of the instance, then one of the total; `_SlotWaitTimeoutError` when
        the instance's did not come free within `timeout` seconds, or the total's within
        `queue_timeout`."""
        entry = self._held.get(instance_id)
        if entry is None:
            entry = self._held[instance_id] = _InstanceSlot(self._size)
        entry.users += 1
        semaphore = entry.semaphore
        try:
            if semaphore.locked():
                try:
                    async with asyncio.timeout(timeout):
                        await semaphore.acquire()
                except TimeoutError:
                    raise _SlotWaitTimeoutError(timeout) from None
            else:
                await semaphore.acquire()  # free: returns at once
            try:
                if self._total.locked():
                    self.queued += 1
                    try:
                        async with asyncio.timeout(queue_timeout):
                            await self._total.acquire()
                    except TimeoutError:
                        raise _QueueWaitTimeoutError(queue_timeout) from None
                    finally:
                        self.queued -= 1
                else:
                    await self._total.acquire()
            except BaseException:
                semaphore.release()
                raise
        except BaseException:
            self._leave(instance_id, entry)
            raise

    def release(self, instance_id: str) -> None:
        """Give back the slots `acquire` took."""
        entry = self._held[instance_id]
        self._total.release()
        entry.semaphore.release()
        self._leave(instance_id, entry)

    def _leave(self, instance_id: str, entry: _InstanceSlot) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._held[instance_id]

    def __len__(self) -> int:
        return len(self._held)


class WapiClient:
    """The W-API adapter. Build once per process, share it, `aclose()` at exit.

    The aiohttp session is created on first use (so the client can be built outside a running
    loop, e.g. in `create_app`) and lives on that loop. `session` hands in a session this
    adapter will use for pooled calls and will not close (benchmarks, special transports);
    `limits.total` and `keepalive_s` are then that session's business, and its silent retry of
    GETs is switched off. `metrics` defaults to
    the provider metrics on prometheus_client's default registry (`WapiMetrics.for_registry`).
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: WapiTimeouts = DEFAULT_TIMEOUT,
        limits: WapiLimits = DEFAULT_LIMITS,
        session: aiohttp.ClientSession | None = None,
        metrics: WapiMetrics | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeouts = timeout
        self._limits = limits
        self._client_timeout = aiohttp.ClientTimeout(
            total=timeout.total,
            connect=timeout.pool,
            sock_connect=timeout.connect,
            sock_read=timeout.read,
        )
        if session is not None:
            _no_silent_retry(session)
        self._session = session
        self._owns_session = session is None
        self._fresh: aiohttp.ClientSession | None = None
        self._slots = _Slots(limits.per_instance, limits.total)
        self._metrics = metrics or WapiMetrics.for_registry()
        self._routes: dict[str, tuple[URL, str]] = {}

    def __repr__(self) -> str:
        return f"WapiClient(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def instances_in_flight(self) -> int:
        """How many instances have a call in flight or queued (bounded per instance)."""
        return len(self._slots)

    @property
    def calls_queued(self) -> int:
        """Calls waiting for one of the `WapiLimits.total` slots (nothing sent yet)."""
        return self._slots.queued

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
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._fresh is not None:
            await self._fresh.close()
            self._fresh = None

    async def ping(self) -> Reachable | ProviderFailure:
        started = time.perf_counter()
        try:
            status, content = await self._exchange(
                self._pooled(), "GET", self._url("/"), query=None, headers=None, data=None
            )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return failure_from_exception("ping", exc)
        latency_ms = (time.perf_counter() - started) * 1000
        if status >= _SERVER_ERROR:
            classified = responses.classify("ping", status, content)
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
        url, operation = self._route(path)
        instance_id = credentials.instance_id
        query = {"instanceId": instance_id}
        if params:
            query.update(params)
        headers = {"Authorization": f"Bearer {credentials.token.get_secret_value()}"}
        # Serialised once, so a retried read (which has no body today) and the log agree.
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        if data is not None:
            headers.update(_JSON_HEADERS)
        started = time.perf_counter()
        status_code: int | None = None
        retried = False
        result: T | ProviderFailure
        metrics = self._metrics
        metrics.in_flight.inc()
        try:
            await self._slots.acquire(instance_id, self._timeouts.pool, self._timeouts.queue)
            try:
                try:
                    status_code, content = await self._exchange(
                        self._pooled(), method, url, query=query, headers=headers, data=data
                    )
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    if operation not in IDEMPOTENT_READS or not is_broken_exchange(exc):
                        raise
                    retried = True
                    metrics.read_retries.labels(operation).inc()
                    _log.info(
                        "wapi_call_retried",
                        instance_id=instance_id,
                        operation=operation,
                        reason=f"{type(exc).__name__}: {exc}",
                    )
                    status_code, content = await self._exchange(
                        self._fresh_session(),
                        method,
                        url,
                        query=query,
                        headers=headers,
                        data=data,
                    )
            finally:
                self._slots.release(instance_id)
        except _QueueWaitTimeoutError:
            result = ProviderUnavailable(
                operation=operation,
                detail=f"no free connection within {self._timeouts.queue:g}s (queued)",
            )
        except _SlotWaitTimeoutError:
            result = ProviderUnavailable(
                operation=operation,
                detail=f"no free slot of this instance within {self._timeouts.pool:g}s",
            )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            result = failure_from_exception(operation, exc)
        else:
            classified = responses.classify(operation, status_code, content)
            result = parse(operation, classified) if isinstance(classified, dict) else classified
        finally:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        metrics.observe(operation, result.code if is_failure(result) else OK, elapsed)
        _log_call(instance_id, operation, status_code, elapsed, result, retried=retried)
        return result

    async def _exchange(  # noqa: PLR0913 - one HTTP exchange, spelled out
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        *,
        query: dict[str, str] | None,
        headers: dict[str, str] | None,
        data: bytes | None,
    ) -> tuple[int, bytes]:
        async with session.request(
            method,
            url,
            params=query,
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=self._client_timeout,
        ) as response:
            return response.status, await response.read()

    def _url(self, path: str) -> URL:
        return self._route(path)[0]

    def _route(self, path: str) -> tuple[URL, str]:
        # The URL and the operation name (the path's last segment) of `path`, built once.
        route = self._routes.get(path)
        if route is None:
            route = self._routes[path] = (URL(self._base_url + path), path.rsplit("/", 1)[-1])
        return route

    def _pooled(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = _new_session(
                aiohttp.TCPConnector(
                    limit=self._limits.total,
                    limit_per_host=0,
                    keepalive_timeout=self._limits.keepalive_s,
                )
            )
        return self._session

    def _fresh_session(self) -> aiohttp.ClientSession:
        # force_close: every request on its own new connection, closed after the answer, so a
        # retry can never land on another connection the server is about to close.
        if self._fresh is None:
            self._fresh = _new_session(
                aiohttp.TCPConnector(limit=self._limits.fresh_total, force_close=True)
            )
        return self._fresh


def _new_session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(
        connector=connector,
        # Responses are read as bytes and parsed by `responses`; no cookies between instances.
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )
    _no_silent_retry(session)
    return session


def _no_silent_retry(session: aiohttp.ClientSession) -> None:
    # aiohttp silently repeats a GET once when a pooled connection turns out closed; W-API
    # restarts and disconnects on GET, so retries are decided here, per call, instead.
    session._retry_connection = False  # noqa: SLF001 - no public switch (aiohttp's test_utils does the same)


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


def _log_call(  # noqa: PLR0913 - the fields of the canonical line
    instance_id: str,
    operation: str,
    status_code: int | None,
    seconds: float,
    result: object,
    *,
    retried: bool,
) -> None:
    latency_ms = round(seconds * 1000, 1)
    if is_failure(result):
        _log.warning(
            "wapi_call_failed",
            code=result.code,
            detail=result.detail,
            uncertain=result.uncertain,
            instance_id=instance_id,
            operation=operation,
            status_code=status_code,
            latency_ms=latency_ms,
            retried=retried,
        )
    else:
        # Keywords spelled out (no `**fields` dict): this line runs once per provider call.
        _log.debug(
            "wapi_call",
            instance_id=instance_id,
            operation=operation,
            status_code=status_code,
            latency_ms=latency_ms,
            retried=retried,
        )
