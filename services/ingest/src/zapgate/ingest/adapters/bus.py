"""The NATS connection and the JetStream publisher behind the `Publisher` port.

The connection never buffers while disconnected (`pending_size=0`): a publish fails at once,
and the caller spools the webhook instead of waiting on a dead socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import nats
import structlog
from nats.errors import NoServersError

from zapgate.contracts import subjects

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = structlog.get_logger("zapgate.ingest.bus")


class NotConnectedError(ConnectionError):
    """NATS is not connected right now."""


class NatsConnection:
    """One NATS client for the process, (re)connected in the background.

    The first connect is retried forever, so ingest starts (and spools) with NATS down.
    `on_connect` callbacks run after every (re)connect, e.g. to declare streams.
    """

    def __init__(self, url: str, *, name: str = "zapgate-ingest") -> None:
        self._url = url
        self._name = name
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_connect: list[Callable[[Client], Awaitable[None]]] = []
        self._after_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def on_connect(self, callback: Callable[[Client], Awaitable[None]]) -> None:
        self._on_connect.append(callback)

    @property
    def client(self) -> Client | None:
        return self._client

    def require(self) -> Client:
        client = self._client
        if client is None or not client.is_connected:
            raise NotConnectedError("NATS is not connected")
        return client

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None and not self._client.is_closed:
            # Every publish was awaited already; draining subscriptions would only wait.
            await self._client.close()

    async def _connect_forever(self) -> None:
        delay = 0.1
        while self._client is None:
            try:
                client = await nats.connect(
                    self._url,
                    name=self._name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    pending_size=0,
                    allow_reconnect=True,
                    reconnected_cb=self._reconnected,
                    disconnected_cb=self._disconnected,
                    error_cb=self._error,
                )
            except (NoServersError, OSError, TimeoutError) as error:
                log.warning("nats_connect_failed", reason=repr(error), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._client = client
        await self._after_connect()

    async def _after_connect(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            for callback in self._on_connect:
                await callback(client)
        except Exception as error:  # noqa: BLE001 - a reconnect must not kill the process
            log.warning("nats_after_connect_failed", reason=repr(error))
            return
        log.info(
            "nats_connected", url=client.connected_url.netloc if client.connected_url else None
        )
        self.connected.set()

    async def _reconnected(self) -> None:
        # Runs inside nats-py's reconnect loop: stream requests must not be awaited from here.
        self._after_task = asyncio.create_task(self._after_connect(), name="nats-after-connect")

    async def _disconnected(self) -> None:
        self.connected.clear()
        log.warning("nats_disconnected", reason="connection lost; webhooks go to the spool")

    async def _error(self, error: Exception) -> None:
        log.debug("nats_error", reason=repr(error))


class JetStreamPublisher:
    """`ports.Publisher` over the shared connection: publish with `stream=` and `Nats-Msg-Id`."""

    def __init__(self, connection: NatsConnection, *, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._js: JetStreamContext | None = None
        self._js_client: Client | None = None

    @property
    def max_payload(self) -> int:
        client = self._connection.client
        return client.max_payload if client is not None and client.is_connected else 1024 * 1024

    async def publish(
        self, subject: str, data: bytes, msg_id: str, *, stream: str = subjects.STREAM_WEBHOOKS
    ) -> bool:
        client = self._connection.require()
        if self._js is None or self._js_client is not client:
            self._js, self._js_client = client.jetstream(timeout=self._timeout), client
        ack = await self._js.publish(
            subject,
            data,
            stream=stream,
            headers={subjects.MSG_ID_HEADER: msg_id},
            timeout=self._timeout,
        )
        return bool(ack.duplicate)
