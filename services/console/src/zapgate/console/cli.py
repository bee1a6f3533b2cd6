"""`zapgate-console`: run the operator console, make password hashes, apply its migrations.

zapgate-console run              serve the console (settings from ZAPGATE_CONSOLE_*)
zapgate-console hash-password    read a password on stdin, print its Argon2id hash
zapgate-console migrate          apply the console's migrations (its audit table)
"""

from __future__ import annotations

import argparse
import getpass
import sys

import uvicorn

from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.console.app import create_app
from zapgate.console.migrations import SPEC
from zapgate.console.settings import ConsoleSettings
from zapgate.runtime.cli_parser import CliArgumentParser
from zapgate.runtime.db import migrate
from zapgate.runtime.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = CliArgumentParser(prog="zapgate-console", description="zapgate console")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="serve the console")
    commands.add_parser("hash-password", help="print the Argon2id hash of a password (stdin)")
    commands.add_parser("migrate", help="apply the console's migrations")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
        # Never from argv: `ps` and shell history would show it.
        password = getpass.getpass("Senha: ") if sys.stdin.isatty() else sys.stdin.readline()
        password = password.rstrip("\n")
        if not password:
            sys.stderr.write("erro PASSWORD_EMPTY: senha vazia; digite a senha do operador.\n")
            return 2
        print(Argon2Passwords().hash(password))  # noqa: T201 - a CLI's answer
        return 0
    settings = load_settings(ConsoleSettings)
    if args.command == "migrate":
        migrate(settings.database_url.get_secret_value(), SPEC)
        return 0
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
