"""`zapgate-ingest`: run the gateway, replay stored webhooks, list the quarantine, show stats.

zapgate-ingest run                       # settings from ZAPGATE_INGEST_*
zapgate-ingest archive                   # the archiver alone (`run` starts one as its child)
zapgate-ingest replay --since 2025-10-01T00:00:00Z [--instance ID] [--kind KIND] [--reroute]
zapgate-ingest quarantine list [--limit 50] [--body]
zapgate-ingest stats [--since ...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import nats
import structlog
import uvicorn
from pydantic import TypeAdapter

from zapgate.contracts import subjects
from zapgate.contracts.webhooks import AnyWebhookEvent
from zapgate.ingest.adapters.db import PostgresArchive
from zapgate.ingest.domain.routing import route
from zapgate.runtime.cli_parser import CliArgumentParser
from zapgate.runtime.db import create_engine
from zapgate.runtime.logging import configure_service_logging

if TYPE_CHECKING:
    from collections.abc import Sequence

ENV_PREFIX = "ZAPGATE_INGEST_"
_EVENTS: TypeAdapter[Any] = TypeAdapter(AnyWebhookEvent)
log = structlog.get_logger("zapgate.ingest.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run()
    if args.command == "archive":
        return _archive(with_parent=args.with_parent)
    database_url = args.database_url or os.environ.get(f"{ENV_PREFIX}DATABASE_URL")
    if not database_url:
        parser.error(f"--database-url ou ${ENV_PREFIX}DATABASE_URL é obrigatório")
    if args.command == "replay":
        nats_url = args.nats_url or os.environ.get(f"{ENV_PREFIX}NATS_URL", "nats://127.0.0.1:4222")
        replayed = asyncio.run(
            replay(
                database_url,
                nats_url,
                since=args.since,
                until=args.until,
                instance_id=args.instance,
                kind=args.kind,
                reroute=args.reroute,
                run_id=args.run_id,
            )
        )
        sys.stdout.write(f"replayed: {replayed}\n")
        return 0
    if args.command == "quarantine":
        asyncio.run(_quarantine_list(database_url, args.limit, show_body=args.body))
        return 0
    asyncio.run(_stats(database_url, args.since, as_json=args.json))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = CliArgumentParser(prog="zapgate-ingest", description="zapgate webhook gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="serve POST /webhooks/{secret} (settings from the environment)")
    archive = commands.add_parser(
        "archive", help="archive ZG_WEBHOOKS into PostgreSQL (settings from the environment)"
    )
    archive.add_argument(
        "--with-parent", action="store_true", help="stop when stdin ends (run's child)"
    )

    def with_database(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--database-url", help=f"default: ${ENV_PREFIX}DATABASE_URL")
        return sub

    replay_parser = with_database(
        commands.add_parser("replay", help="republish stored webhooks into ZG_WEBHOOKS")
    )
    replay_parser.add_argument("--nats-url", help=f"default: ${ENV_PREFIX}NATS_URL")
    replay_parser.add_argument("--since", type=datetime.fromisoformat)
    replay_parser.add_argument("--until", type=datetime.fromisoformat)
    replay_parser.add_argument("--instance")
    replay_parser.add_argument("--kind")
    replay_parser.add_argument(
        "--reroute", action="store_true", help="route the raw body again (after a router fix)"
    )
    replay_parser.add_argument(
        "--run-id", help="same id = same replay: running it twice publishes once (dedupe window)"
    )
    quarantine = commands.add_parser("quarantine", help="bodies that were not JSON objects")
    quarantine_commands = quarantine.add_subparsers(dest="action", required=True)
    listing = with_database(quarantine_commands.add_parser("list", help="newest first"))
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--body", action="store_true", help="print the whole body (base64)")
    stats = with_database(commands.add_parser("stats", help="webhooks per instance and kind"))
    stats.add_argument("--since", type=datetime.fromisoformat)
    stats.add_argument("--json", action="store_true")
    return parser


def _run() -> int:
    from zapgate.ingest.adapters.http_server import (  # noqa: PLC0415
        install_secret_masking,
        uvicorn_config,
    )
    from zapgate.ingest.app import create_app  # noqa: PLC0415 - only `run` needs the app
    from zapgate.ingest.archiver_process import (  # noqa: PLC0415
        ArchiverChild,
        archiver_argv,
        free_port,
        loopback_for,
    )
    from zapgate.ingest.settings import IngestSettings  # noqa: PLC0415
    from zapgate.runtime.settings import load_settings  # noqa: PLC0415

    settings = load_settings(IngestSettings)
    configure_service_logging(settings)
    install_secret_masking()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.http_host, settings.http_port))
    # Listening before startup: early requests queue in the backlog instead of being refused.
    sock.listen(2048)
    child: ArchiverChild | None = None
    archiver_metrics_url: str | None = None
    if settings.archiver_enabled and settings.archiver_process:
        # The archiver in its own process: the webhook route's loop does nothing else. Its
        # probe port is known here (picked when 0) so that the gateway's /metrics shows its
        # metrics too (`adapters.child_metrics`).
        port = settings.archiver_probe_port or free_port(settings.probe_host)
        env = {**os.environ, "ZAPGATE_INGEST_ARCHIVER_PROBE_PORT": str(port)}
        child = ArchiverChild(archiver_argv(), env)
        archiver_metrics_url = f"http://{loopback_for(settings.probe_host)}:{port}/metrics"
        settings = settings.model_copy(update={"archiver_enabled": False})
    app = create_app(settings, archiver_metrics_url=archiver_metrics_url)
    config = uvicorn_config(
        app, settings.http_host, settings.http_port, access_log=settings.access_log
    )
    log.info("ingest_listening", host=settings.http_host, port=sock.getsockname()[1])
    if child is not None:
        child.start()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if child is not None:
            child.stop()
    return 0


def _archive(*, with_parent: bool) -> int:
    import uvloop  # noqa: PLC0415 - only the archiver process runs its own loop

    from zapgate.ingest.archiver_process import stop_on_signals  # noqa: PLC0415
    from zapgate.ingest.lifecycle import run_archiver  # noqa: PLC0415
    from zapgate.ingest.settings import IngestSettings  # noqa: PLC0415
    from zapgate.runtime.settings import load_settings  # noqa: PLC0415

    settings = load_settings(IngestSettings)
    configure_service_logging(settings)
    structlog.contextvars.bind_contextvars(process="archiver")
    if settings.archiver_nice:
        # Archiving yields the CPU to the webhook route: what it stores is already durable in
        # JetStream and waits there; the answer to W-API does not.
        os.nice(settings.archiver_nice)

    async def archive() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop, with_parent=with_parent)
        await run_archiver(settings, stop)

    uvloop.run(archive())
    return 0


async def replay(  # noqa: PLR0913 - the filters of one replay, all keyword-only
    database_url: str,
    nats_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    instance_id: str | None = None,
    kind: str | None = None,
    reroute: bool = False,
    run_id: str | None = None,
) -> int:
    """Republish stored webhooks (oldest first); returns how many were published.

    Each gets `Nats-Msg-Id = <dedupe key>:replay:<run id>`: a replay is not swallowed as a
    duplicate of the original, and repeating one run (same `run_id`) publishes once. The
    archiver stores nothing twice (the row's dedupe key is unchanged).
    """
    run = run_id or uuid.uuid4().hex[:12]
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream(timeout=5)
    published = 0
    try:
        archive = PostgresArchive(engine)
        rows = archive.payloads(since=since, until=until, instance_id=instance_id, kind=kind)
        async for row in rows:
            if reroute:
                event = route(row["raw"], row["received_at"])
            else:
                event = _EVENTS.validate_python({**row["event"], "raw": row["raw"]})
            await js.publish(
                subjects.webhook_subject(event.kind),
                event.model_dump_json().encode(),
                stream=subjects.STREAM_WEBHOOKS,
                headers={subjects.MSG_ID_HEADER: f"{event.dedupe_key}:replay:{run}"},
            )
            published += 1
    finally:
        await nc.drain()
        await engine.dispose()
    log.info("replay_done", run_id=run, published=published, reroute=reroute)
    return published


async def _quarantine_list(database_url: str, limit: int, *, show_body: bool) -> None:
    import base64  # noqa: PLC0415 - only the listing encodes bodies

    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        rows = await PostgresArchive(engine).quarantined(limit)
    finally:
        await engine.dispose()
    for row in rows:
        body = bytes(row["body"])
        item: dict[str, Any] = {
            "id": row["id"],
            "received_at": row["received_at"].isoformat(),
            "code": row["code"],
            "size": len(body),
            "content_type": row["content_type"],
            "dedupe_key": row["dedupe_key"],
            "preview": body[:120].decode("utf-8", errors="replace"),
        }
        if show_body:
            item["body_base64"] = base64.b64encode(body).decode()
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")


async def _stats(database_url: str, since: datetime | None, *, as_json: bool) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        counts = await PostgresArchive(engine).counts(since)
    finally:
        await engine.dispose()
    for item in counts:
        fields = {
            "instance_id": item.instance_id,
            "kind": item.kind,
            "count": item.count,
            "last_received_at": item.last_received_at.isoformat(),
        }
        if as_json:
            sys.stdout.write(json.dumps(fields) + "\n")
        else:
            sys.stdout.write(
                f"{item.instance_id or '-':<30} {item.kind:<22} {item.count:>10} "
                f"{fields['last_received_at']}\n"
            )


if __name__ == "__main__":
    raise SystemExit(main())
