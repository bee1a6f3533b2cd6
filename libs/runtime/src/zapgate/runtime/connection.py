"""One NATS connection per process that outlives every client nats-py gives up on.

nats-py 2.16 reconnects by itself after a lost socket (server restart, network blip), but on a
server `-ERR` other than a stale connection or a permissions violation (`Maximum Control Line
Exceeded`, `Maximum Payload Violation`, `Unknown Protocol Operation`, ...) its `_process_err`
closes the client for good (status CLOSED, `closed_cb` called). `NatsConnection` supervises the
client: when it closes without being asked to, a new client is connected and the `on_connect`
callbacks run again; users always take the current client from `require()`.

The subjects and headers a publisher sends are checked before they reach the socket
(`check_publish`), so the usual causes of such a close fail one publish with a clear error
instead of cutting the whole process off.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import nats
import stamina
import structlog
from nats.errors import NoServersError
from pydantic import SecretStr

from zapgate.runtime.logging import url_for_log

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from nats.aio.client import Client

_log = structlog.get_logger("zapgate.runtime.connection")

DEFAULT_MAX_CONTROL_LINE = 4096
"""nats-server's default `max_control_line` (bytes); the server does not announce it."""
# Room in the control line for `HPUB`, the reply inbox and two sizes besides the subject.
_CONTROL_LINE_OVERHEAD = 256
_FORBIDDEN_SUBJECT_BYTES = frozenset(range(0x21)) | {0x7F}


class NotConnectedError(ConnectionError):
    """There is no connected NATS client right now (starting, reconnecting or replacing)."""


class InvalidPublishError(ValueError):
    """A subject or header the server would refuse (and close the connection for).

    `code` is stable: `subject_empty`, `subject_too_long`, `subject_invalid_byte`,
    `subject_empty_token`, `subject_wildcard`, `header_invalid`.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def check_publish(
    subject: str,
    headers: Mapping[str, str] | None = None,
    *,
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE,
) -> None:
    """Raise `InvalidPublishError` unless `subject` and `headers` can be published safely.

    A publish subject is non-empty, at most `max_control_line - 256` UTF-8 bytes, has no
    whitespace or control bytes, no empty token and no wildcard token. Header names and
    values must not contain CR or LF (they would break the message framing).
    """
    encoded = subject.encode("utf-8", "surrogatepass")
    if not encoded:
        raise InvalidPublishError("subject_empty", "the subject is empty")
    limit = max_control_line - _CONTROL_LINE_OVERHEAD
    if len(encoded) > limit:
        raise InvalidPublishError(
            "subject_too_long", f"subject of {len(encoded)} bytes, limit {limit}"
        )
    if not _FORBIDDEN_SUBJECT_BYTES.isdisjoint(encoded):
        raise InvalidPublishError("subject_invalid_byte", "whitespace or control byte")
    tokens = subject.split(".")
    if "" in tokens:
        raise InvalidPublishError("subject_empty_token", "a token between dots is empty")
    if "*" in tokens or ">" in tokens:
        raise InvalidPublishError("subject_wildcard", "a publish subject has no wildcards")
    for key, value in (headers or {}).items():
        # Plain `in` tests: this runs for every publish (the webhook request path included).
        if not key or "\r" in key or "\n" in key or "\r" in value or "\n" in value:
            raise InvalidPublishError("header_invalid", f"header {key[:64]!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOptions:
    """How to connect. `pending_size=0`: a publish while disconnected fails at once instead
    of buffering (callers retry or spool); `max_control_line` must match the server's."""

    name: str
    connect_timeout: timedelta = timedelta(seconds=2)
    reconnect_time_wait: timedelta = timedelta(milliseconds=250)
    pending_size: int = 0
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE
    inbox_prefix: str | None = None
    retry_wait_max: timedelta = timedelta(seconds=2)
    nkeys_seed: SecretStr | None = None
    """The nkey seed (`ServiceSettings.nats_seed`); use with `inbox_prefix` `_INBOX_<user>`."""


class NatsConnection:
    """A supervised NATS client: connected in the background, replaced when nats-py closes it.

    ```python
    connection = NatsConnection("nats://127.0.0.1:4222", ConnectionOptions(name="zapgate-ingest"))
    connection.on_connect(lambda nc: ensure_streams(nc, ALL_STREAMS))
    await connection.start()              # returns at once; connects in the background
    await connection.wait_connected(5.0)  # optional
    nc = connection.require()             # the current client, or NotConnectedError
    await connection.close()
    ```
    `on_connect` callbacks run after the first connect, every reconnect and every replacement;
    `generation` counts the clients (consumers re-subscribe when it changes), `connects` the
    successful (re)connects and `replacements` the clients nats-py closed for good.
    """

    def __init__(self, url: str | list[str], options: ConnectionOptions) -> None:
        self._servers = [url] if isinstance(url, str) else list(url)
        self.options = options
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_connect: list[Callable[[Client], Awaitable[object]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._client_closed = asyncio.Event()
        self._closing = False
        self.connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self.generation = 0
        self.replacements = 0
        self.connects = 0
        self._after_connect_runs = 0

    def on_connect(self, callback: Callable[[Client], Awaitable[object]]) -> None:
        """Run `callback(client)` after every (re)connect, e.g. to declare streams."""
        self._on_connect.append(callback)

    @property
    def client(self) -> Client | None:
        """The current client (maybe disconnected), or None before the first connect."""
        return self._client

    def require(self) -> Client:
        """The current client if it is connected; else `NotConnectedError`."""
        client = self._client
        if client is None or not client.is_connected:
            raise NotConnectedError("NATS is not connected")
        return client

    def check_publish(self, subject: str, headers: Mapping[str, str] | None = None) -> None:
        """`check_publish` with this connection's control-line limit."""
        check_publish(subject, headers, max_control_line=self.options.max_control_line)

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._supervise(), name="nats-supervisor")

    async def wait_connected(self, timeout: float) -> Client:
        """Wait until connected (and the `on_connect` callbacks ran); `TimeoutError` after."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        return self.require()

    async def wait_for_connects(self, count: int, timeout: float) -> Client:
        """Wait until the client connected `count` times in all (first connect, reconnects and
        replacements each count one) and is connected now; `TimeoutError` after `timeout` s."""

        def reached() -> bool:
            return self.connects >= count and self.connected.is_set()

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(reached)
        return self.require()

    async def close(self) -> None:
        """Stop supervising and close the client (pending publishes were awaited by callers)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._background):
            task.cancel()
        if self._client is not None and not self._client.is_closed:
            await self._client.close()
        self.connected.clear()

    async def _supervise(self) -> None:
        while True:
            client = await self._connect_until_up()
            self._client = client
            self.generation += 1
            await self._after_connect(client)
            await self._client_closed.wait()
            self.connected.clear()
            if self._is_closing():
                return
            self.replacements += 1
            _log.warning(
                "nats_client_replaced",
                reason=repr(client.last_error) if client.last_error else "closed",
                generation=self.generation,
            )

    def _is_closing(self) -> bool:
        return self._closing

    async def _connect_until_up(self) -> Client:
        self._client_closed.clear()
        wait_max = self.options.retry_wait_max.total_seconds()
        # Retried for ever: a service starts (and spools, or waits) with NATS down.
        async for attempt in stamina.retry_context(
            on=(NoServersError, OSError, TimeoutError),
            attempts=None,
            timeout=None,
            wait_initial=0.1,
            wait_max=wait_max,
            wait_jitter=0.1,
        ):
            with attempt:  # stamina logs each retry (`stamina.retry_scheduled`) and counts it
                return await self._connect_once()
        raise AssertionError("unreachable: retried without limit")  # pragma: no cover

    async def _connect_once(self) -> Client:
        options = self.options
        extra: dict[str, object] = {}
        if options.inbox_prefix is not None:
            extra["inbox_prefix"] = options.inbox_prefix
        if options.nkeys_seed is not None:
            extra["nkeys_seed_str"] = options.nkeys_seed.get_secret_value()
        return await nats.connect(
            self._servers,
            name=options.name,
            connect_timeout=options.connect_timeout.total_seconds(),
            max_reconnect_attempts=-1,
            reconnect_time_wait=options.reconnect_time_wait.total_seconds(),
            pending_size=options.pending_size,
            allow_reconnect=True,
            reconnected_cb=self._reconnected,
            disconnected_cb=self._disconnected,
            closed_cb=self._closed,
            error_cb=self._error,
            **extra,
        )

    async def _after_connect(self, client: Client) -> None:
        """Run the `on_connect` callbacks, again and again (backing off) until they all succeed
        or this client stops being the current, connected one; only then is it `connected`.

        They fail for a while after a reconnect to a cluster that lost a node (stream requests
        time out until JetStream elected new leaders); giving up there left the process
        believing it was disconnected for good (`connected` never set again)."""
        self._after_connect_runs += 1
        run = self._after_connect_runs

        def superseded() -> bool:
            return (
                self._closing
                or run != self._after_connect_runs
                or client is not self._client
                or client.is_closed
            )

        async for attempt in stamina.retry_context(
            on=Exception,
            attempts=None,
            timeout=None,
            wait_initial=0.1,
            wait_max=self.options.retry_wait_max.total_seconds(),
            wait_jitter=0.1,
        ):
            if superseded():
                return
            with attempt:
                try:
                    for callback in self._on_connect:
                        await callback(client)
                except Exception as error:
                    _log.warning(
                        "nats_after_connect_failed", reason=repr(error), attempt=attempt.num
                    )
                    raise
        if not superseded() and client.is_connected:
            url = url_for_log(client.connected_url.netloc) if client.connected_url else None
            _log.info("nats_connected", url=url, generation=self.generation)
            self.connected.set()
            self.connects += 1
            async with self._changed:
                self._changed.notify_all()

    async def _reconnected(self) -> None:
        client = self._client
        if client is None:
            return
        # Called from inside nats-py's reconnect loop: JetStream requests must not be awaited
        # here, so the callbacks run in a task of their own.
        task = asyncio.create_task(self._after_connect(client), name="nats-after-reconnect")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _disconnected(self) -> None:
        self.connected.clear()
        if not self._closing:
            _log.warning("nats_disconnected")

    async def _closed(self) -> None:
        self._client_closed.set()

    async def _error(self, error: Exception) -> None:
        # Refused reconnect attempts arrive here several times a second during an outage.
        if isinstance(error, OSError):
            _log.debug("nats_error", reason=repr(error))
        else:
            _log.warning("nats_error", reason=repr(error))
