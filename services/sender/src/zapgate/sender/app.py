"""Composition root: `faststream run zapgate.sender.app:create_app --factory`.

Nothing is built at import. The broker connects first; the database engine, the W-API client,
the consumers and the probe server are built once it is up, and released on shutdown.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.sending import SendListReply, SendOutcomeReply, StuckCountsReply
from zapgate.runtime.clock import Clock, SystemClock
from zapgate.runtime.logging import configure_service_logging, faststream_logger
from zapgate.runtime.topology import queue_of
from zapgate.sender.lifecycle import start
from zapgate.sender.settings import SenderSettings

if TYPE_CHECKING:
    from zapgate.sender.handlers import SenderHandlers
    from zapgate.wapi.port import WapiPort

_log = structlog.get_logger("zapgate.sender")
_STARTING = Problem.of(ErrorCode.INTERNAL, "sender is starting")
_NOT_READY = SendOutcomeReply(ok=False, error=_STARTING)
_NOT_READY_LIST = SendListReply(ok=False, error=_STARTING)
_NOT_READY_COUNTS = StuckCountsReply(ok=False, error=_STARTING)
API_QUEUE = queue_of("sender")


def create_app(
    settings: SenderSettings | None = None,
    *,
    wapi: WapiPort | None = None,
    clock: Clock | None = None,
    configure_logs: bool = True,
) -> FastStream:
    """The sender application. `wapi` and `clock` replace the real ones (tests, benchmarks).

    `configure_logs=False` when the entrypoint configured logging already (`zapgate-sender
    run` does; `faststream run ... --factory` relies on the default)."""
    settings = settings or SenderSettings()
    if configure_logs:
        # Before FastStream logs its first line ("FastStream app starting..."), so that is JSON.
        configure_service_logging(settings)
    broker = NatsBroker(
        settings.nats_url,
        max_reconnect_attempts=-1,
        logger=faststream_logger(),
        **settings.nats_connect_options(),
    )
    running: list[SenderHandlers] = []
    resources = AsyncExitStack()

    @broker.subscriber(subjects.API_SENDER_OUTCOME, queue=API_QUEUE)
    async def on_get_send_outcome(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_get_send_outcome(msg.body) if running else _NOT_READY

    @broker.subscriber(subjects.API_SENDER_RETRY, queue=API_QUEUE)
    async def on_retry_send(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_retry_send(msg.body) if running else _NOT_READY

    @broker.subscriber(subjects.API_SENDER_CANCEL, queue=API_QUEUE)
    async def on_cancel_send(msg: NatsMessage) -> SendOutcomeReply:
        return await running[0].on_cancel_send(msg.body) if running else _NOT_READY

    @broker.subscriber(subjects.API_SENDER_LIST, queue=API_QUEUE)
    async def on_list_sends(msg: NatsMessage) -> SendListReply:
        return await running[0].on_list_sends(msg.body) if running else _NOT_READY_LIST

    @broker.subscriber(subjects.API_SENDER_STUCK_COUNTS, queue=API_QUEUE)
    async def on_count_stuck(msg: NatsMessage) -> StuckCountsReply:
        return await running[0].on_count_stuck(msg.body) if running else _NOT_READY_COUNTS

    app = FastStream(broker, logger=faststream_logger())

    @app.after_startup
    async def start_service() -> None:
        running.append(await start(settings, resources, wapi=wapi, clock=clock or SystemClock()))

    @app.on_shutdown
    async def stop_service() -> None:
        running.clear()
        await resources.aclose()
        _log.info("sender_stopped")

    return app
