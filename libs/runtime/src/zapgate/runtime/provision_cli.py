"""`zapgate-provision`: create or update every JetStream stream, as the NATS `admin` user.

The one-shot step before the services start (like `zapgate-migrate` for the database): services
run as their own NATS users, which may only look at streams (`STREAM.INFO`), never create or
change them. Run it again after a topology change.

    ZAPGATE_NATS_URL=nats://nats:4222 zapgate-provision --seed-file secrets/nats/admin.nk

Replicas (`--replicas`, default `$ZAPGATE_STREAM_REPLICAS`, else 1): every stream, and the
webhook bodies bucket if ingest created it already, gets that many copies; existing streams are
moved (a stream update: JetStream adds or removes peers and catches them up in the background).
3 on a three-node cluster (compose's cluster profile).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

import nats
from nats.errors import Error as NatsError
from nats.errors import NoServersError

from zapgate.runtime.nats_auth import connect_options
from zapgate.runtime.streams import StreamProvisioningError, ensure_replicas, ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import Sequence

NATS_URL_ENV = "ZAPGATE_NATS_URL"
NATS_SEED_ENV = "ZAPGATE_NATS_SEED"
REPLICAS_ENV = "ZAPGATE_STREAM_REPLICAS"
ADMIN_USER = "admin"
BODIES_STREAM = "OBJ_ZG_WEBHOOK_BODIES"
"""The stream of ingest's object-store bucket for large webhook bodies (created by ingest)."""


async def provision(url: str, seed: str | None, *, replicas: int = 1) -> list[str]:
    """Ensure every stream of the topology; returns their names. `seed`: the admin's nkey seed
    (None: connect without credentials, e.g. a dev server without auth)."""
    options = connect_options(ADMIN_USER, seed) if seed else {}
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False, **options)
    try:
        specs = all_streams(replicas)
        await ensure_streams(nc, specs)
        await ensure_replicas(nc, BODIES_STREAM, replicas)
    finally:
        await nc.close()
    return [spec.name for spec in specs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zapgate-provision", description=__doc__)
    parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV))
    parser.add_argument(
        "--seed-file", help=f"file with the admin's nkey seed (default: ${NATS_SEED_ENV})"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get(REPLICAS_ENV) or 1),
        choices=(1, 3, 5),
        help=f"copies of every stream (default ${REPLICAS_ENV}, else 1; 3 on a cluster)",
    )
    args = parser.parse_args(argv)
    if not args.nats_url:
        parser.error(f"--nats-url or ${NATS_URL_ENV} is required")
    if args.seed_file:
        with open(args.seed_file, encoding="utf-8") as handle:  # noqa: PTH123 - one read
            seed: str | None = handle.read().strip()
    else:
        seed = os.environ.get(NATS_SEED_ENV) or None
    try:
        names = asyncio.run(provision(args.nats_url, seed, replicas=args.replicas))
    except (NatsError, NoServersError, OSError, TimeoutError, StreamProvisioningError) as exc:
        sys.stderr.write(f"erro PROVISION_FAILED: não foi possível criar os streams: {exc}\n")
        return 1
    sys.stdout.write(f"provisioned: {', '.join(names)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
