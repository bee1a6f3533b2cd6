"""`zapgate-api`: run the HTTP API, migrate its tables, manage API keys.

zapgate-api run
zapgate-api migrate
zapgate-api keys create NAME --instances loja-centro,loja-sul   (or --instances '*')
zapgate-api keys list
zapgate-api keys revoke KEY_ID
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from zapgate.runtime.cli_parser import CliArgumentParser

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zapgate.api.settings import ApiSettings


def _parser() -> argparse.ArgumentParser:
    parser = CliArgumentParser(prog="zapgate-api", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("run", help="serve the HTTP API until SIGTERM or Ctrl-C")
    verbs.add_parser("migrate", help="bring the API's tables to head")
    keys = verbs.add_parser("keys", help="create, list or revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key and print it once")
    create.add_argument("name")
    create.add_argument(
        "--instances", required=True, help="comma-separated instance ids, or '*' for all"
    )
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


async def _run(settings: ApiSettings) -> None:
    from zapgate.api.app import running_api  # noqa: PLC0415 - only `run` needs the server
    from zapgate.runtime.logging import configure_service_logging  # noqa: PLC0415

    configure_service_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_api(settings):
        await stop.wait()


async def _keys(settings: ApiSettings, args: argparse.Namespace) -> int:
    from pwdlib import PasswordHash  # noqa: PLC0415 - only key verbs hash

    from zapgate.api.adapters.db import PostgresKeyStore  # noqa: PLC0415
    from zapgate.api.service import Authenticator  # noqa: PLC0415
    from zapgate.runtime.clock import SystemClock  # noqa: PLC0415
    from zapgate.runtime.db import create_engine  # noqa: PLC0415

    engine = create_engine(settings.database_url.get_secret_value(), pool_size=1)
    clock = SystemClock()
    try:
        store = PostgresKeyStore(engine)
        if args.action == "create":
            instances = [item.strip() for item in args.instances.split(",") if item.strip()]
            auth = Authenticator(store, PasswordHash.recommended(), clock, cache_ttl=0)
            created = await auth.create_key(args.name, instances)
            sys.stdout.write(
                f"key_id: {created.key.key_id}\ninstances: {','.join(sorted(instances))}\n"
                f"token (shown once, keep it secret): {created.token}\n"
            )
            return 0
        if args.action == "revoke":
            revoked = await store.revoke(args.key_id, clock.now())
            sys.stdout.write("revoked\n" if revoked else "no such active key\n")
            return 0 if revoked else 1
        for key in await store.list_keys():
            state = "revoked" if key.revoked else "active"
            sys.stdout.write(
                f"{key.key_id}\t{state}\t{key.name}\t{','.join(sorted(key.instances))}\n"
            )
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    from zapgate.api.settings import ApiSettings  # noqa: PLC0415 - parse arguments first

    args = _parser().parse_args(argv)
    from zapgate.runtime.settings import load_settings  # noqa: PLC0415

    settings = load_settings(ApiSettings)
    if args.verb == "run":
        asyncio.run(_run(settings))
        return 0
    if args.verb == "migrate":
        from zapgate.api.migrations import SPEC  # noqa: PLC0415
        from zapgate.runtime.db import migrate  # noqa: PLC0415

        migrate(settings.database_url.get_secret_value(), SPEC)
        sys.stdout.write("migrated: api\n")
        return 0
    return asyncio.run(_keys(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
