"""The sender's start: the object graph behind `create_app`, its consumers and probes.

Every resource it opens is registered on the caller's `AsyncExitStack`, closed in reverse
order on shutdown (probes, consumers, handlers' releases, NATS, the W-API client, the engine).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from zapgate.contracts import subjects
from zapgate.runtime.connection import NatsConnection
from zapgate.runtime.consumer import PullConsumer
from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import SqlDeadLetterStore
from zapgate.runtime.pinned import PinnedPullConsumer
from zapgate.runtime.probes import create_probe_app, database_check, serve_probes
from zapgate.runtime.publisher import JetStreamPublisher
from zapgate.runtime.streams import ensure_schedule, ensure_streams
from zapgate.runtime.topology import SEND_PARTITIONS, all_streams
from zapgate.sender import tables
from zapgate.sender.adapters.batching import GroupCommit
from zapgate.sender.adapters.bus import JetStreamOutcomeLog, RuntimeEventPublisher
from zapgate.sender.adapters.db import PostgresCommandStore, PostgresInstanceDirectory
from zapgate.sender.adapters.listing import PostgresSendListing
from zapgate.sender.adapters.partitions import PostgresPartitionFence
from zapgate.sender.adapters.projection import InstanceProjection
from zapgate.sender.adapters.provider import WapiProvider
from zapgate.sender.handlers import HandlerOptions, SenderHandlers
from zapgate.sender.partitions import FencedPacer, Partitions
from zapgate.sender.service import SenderDeps, SendPolicy
from zapgate.wapi.client import WapiClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AsyncExitStack

    from nats.aio.client import Client

    from zapgate.runtime.clock import Clock
    from zapgate.sender.settings import SenderSettings
    from zapgate.wapi.port import WapiPort

_log = structlog.get_logger("zapgate.sender")


async def start(
    settings: SenderSettings, resources: AsyncExitStack, *, wapi: WapiPort | None, clock: Clock
) -> SenderHandlers:
    """Build the object graph and start the consumers; every resource closes on `resources`."""
    # The same ceiling as the default (20 connections), more of it kept: with many instances
    # sending at once, overflow connections were opened and closed again per statement.
    # Pinged only after a second idle in the pool: under load the batches' connections come
    # back within milliseconds, and a ping per checkout was a round trip per batch statement.
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=16,
        max_overflow=4,
        ping_idle_after=timedelta(seconds=1),
    )
    resources.push_async_callback(engine.dispose)
    provider = wapi or WapiClient(base_url=settings.wapi_base_url)
    if wapi is None:
        resources.push_async_callback(provider.aclose)
    connection = NatsConnection(
        settings.nats_url, settings.nats_connection_options("zapgate-sender")
    )
    connection.on_connect(lambda nc: _provision(nc, settings))
    await connection.start()
    resources.push_async_callback(connection.close)
    await connection.wait_connected(timeout=30)
    publisher = JetStreamPublisher(connection)
    fence = PostgresPartitionFence(engine)
    partitions = Partitions(fence, clock, owner=f"{socket.gethostname()}:{os.getpid()}")
    store = PostgresCommandStore(engine)
    resources.push_async_callback(_log_batches, store, fence)
    deps = SenderDeps(
        store=store,
        directory=InstanceProjection(PostgresInstanceDirectory(engine, settings.token_cipher())),
        provider=WapiProvider(provider, live_check_timeout=settings.live_check_timeout),
        publisher=RuntimeEventPublisher(publisher),
        outcomes=JetStreamOutcomeLog(connection),
        clock=clock,
        pacer=FencedPacer(clock, settings.min_send_gap.total_seconds(), fence),
        policy=SendPolicy.from_settings(settings),
        calls=fence,
    )
    options = HandlerOptions.from_settings(settings)
    # The console's reads on a small pool of their own, never waiting for the send path's.
    listing_engine = create_engine(
        settings.database_url.get_secret_value(), pool_size=2, max_overflow=2
    )
    resources.push_async_callback(listing_engine.dispose)
    listing = PostgresSendListing(listing_engine)
    handlers = SenderHandlers(deps, options, partitions, listing=listing)
    resources.push_async_callback(handlers.stop)
    dead_letters = SqlDeadLetterStore(engine, tables.dead_letters)
    for consumer in handlers.consumers(settings):
        common: dict[str, Any] = {
            "decode": consumer.decode,
            "dead_letters": dead_letters,
            "publisher": publisher,
            "clock": clock,
            "concurrency": settings.max_in_flight,
            "batch": consumer.batch,
        }
        if consumer.partition is None:
            loop: PullConsumer[Any] = PullConsumer(
                connection, consumer.spec, consumer.handler, **common
            )
        else:
            # A partition's share of `max_in_flight`: its consumer holds no more deliveries
            # (the backlog waits on the server), so a lost replica leaves only those to the
            # next holder, and none of them needs an in-progress beat meanwhile.
            common["concurrency"] = max(1, settings.max_in_flight // SEND_PARTITIONS)
            loop = PinnedPullConsumer(
                connection,
                consumer.spec,
                consumer.handler,
                on_pinned=partitions.hook(consumer.partition),
                **common,
            )
        await loop.start()
        resources.push_async_callback(loop.stop)
    checks = {"nats": _nats_check(connection), "database": database_check(engine)}
    probes = await serve_probes(create_probe_app(checks), settings.probe_host, settings.probe_port)
    resources.push_async_callback(probes.stop)
    _log.info("sender_started")
    return handlers


async def _log_batches(store: PostgresCommandStore, fence: PostgresPartitionFence) -> None:
    """At stop: how the group commits batched (statements and items), for profiles."""
    groups: dict[str, GroupCommit[Any, Any]] = {
        "claims": store.claims,
        "moves": store.moves,
        "calls": fence.records,
    }
    _log.info(
        "sender_batches",
        **{
            name: {"batches": group.batches, "items": group.items, "largest": group.largest}
            for name, group in groups.items()
        },
    )


async def _provision(nc: Client, settings: SenderSettings) -> None:
    await ensure_streams(nc, all_streams(settings.stream_replicas))
    if settings.sweep_every is not None:
        await ensure_schedule(
            nc,
            stream=subjects.STREAM_TICKS,
            schedule_subject=subjects.SENDER_TICK_SCHEDULE,
            target_subject=subjects.SENDER_TICK,
            every=settings.sweep_every,
        )


def _nats_check(connection: NatsConnection) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        await connection.require().flush(timeout=1)

    return check
