"""The ingest benchmark's baseline: a bare Starlette app doing only parse + validate + one
JetStream publish-with-ack per request, served like the gateway (uvicorn, uvloop, httptools).

    python services/ingest/bench/bare_gateway.py --port 8001 --nats-url nats://127.0.0.1:4222

It publishes into its own stream (`BENCH_BARE`, same settings as `ZG_WEBHOOKS`) so the real
gateway's stream count stays exact.
"""

from __future__ import annotations

# ruff: noqa: INP001 - a script, run by path, not an importable module
import argparse
import dataclasses
import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import nats
import uvicorn
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from zapgate.contracts import subjects
from zapgate.runtime.streams import ensure_streams
from zapgate.runtime.topology import WEBHOOKS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.responses import Response

BARE_STREAM = dataclasses.replace(WEBHOOKS, name="BENCH_BARE", subjects=("bench.bare.>",))


class BareWebhook(BaseModel):
    """Just enough of a W-API body to validate it and derive a dedupe key."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event: str
    instanceId: str  # noqa: N815 - the provider's field name
    messageId: str | None = None  # noqa: N815 - the provider's field name
    moment: int | None = None


def create_app(nats_url: str) -> Starlette:
    state: dict[str, nats.js.JetStreamContext] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        nc = await nats.connect(nats_url)
        await ensure_streams(nc, [BARE_STREAM])
        state["js"] = nc.jetstream(timeout=2.0)
        try:
            yield
        finally:
            await nc.drain()

    async def receive(request: Request) -> Response:
        try:
            webhook = BareWebhook.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError):
            return JSONResponse({"ok": False}, status_code=400)
        key = f"{webhook.event}:{webhook.instanceId}:{webhook.messageId}:{webhook.moment}"
        ack = await state["js"].publish(
            f"bench.bare.{subjects.token(webhook.event)}",
            webhook.model_dump_json().encode(),
            stream=BARE_STREAM.name,
            headers={subjects.MSG_ID_HEADER: key},
        )
        return JSONResponse({"ok": True, "duplicate": bool(ack.duplicate)})

    return Starlette(
        routes=[Route("/webhooks/{secret}", receive, methods=["POST"])], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats-url", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.nats_url),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
