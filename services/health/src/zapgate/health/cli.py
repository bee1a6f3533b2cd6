"""`zapgate-health`: operate the health service over its NATS request API.

    zapgate-health instances add ID --name NAME [--token-env VAR] [--unmanaged] [--replace]
    zapgate-health instances list | pause ID | resume ID | remove ID
    zapgate-health status [ID]      current health (one or all)
    zapgate-health check [ID]       check now (one or all managed)
    zapgate-health run              run the service
    zapgate-health migrate          apply health's migrations

The token is read from an environment variable (default ZAPGATE_INSTANCE_TOKEN) or from
stdin, never from the command line, where `ps` and shell history would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import IO, TypeVar

from pydantic import BaseModel, SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import NatsUnreachableError, connect_once
from zapgate.contracts.envelope import Contract
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    GetInstanceHealth,
    HealthReply,
    InstanceHealth,
    InstanceListReply,
    ListInstances,
    PauseInstance,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
)
from zapgate.runtime.cli_parser import CliArgumentParser
from zapgate.runtime.requests import NoAnswer, ask

R = TypeVar("R", bound=BaseModel)
TOKEN_ENV = "ZAPGATE_INSTANCE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
NATS_URL_ENV = "ZAPGATE_HEALTH_NATS_URL"
CONNECT_TIMEOUT_S = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = CliArgumentParser(prog="zapgate-health", description="zapgate health service")
    parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, "nats://127.0.0.1:4222"))
    parser.add_argument("--timeout", type=float, default=30.0, help="request timeout (s)")
    commands = parser.add_subparsers(dest="command", required=True)
    instances = commands.add_parser("instances", help="the instance registry")
    verbs = instances.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add")
    add.add_argument("instance_id")
    add.add_argument("--name", required=True)
    add.add_argument("--token-env", default=TOKEN_ENV)
    add.add_argument("--unmanaged", action="store_true")
    add.add_argument("--replace", action="store_true")
    verbs.add_parser("list")
    for verb in ("pause", "resume", "remove"):
        verbs.add_parser(verb).add_argument("instance_id")
    commands.add_parser("status").add_argument("instance_id", nargs="?")
    commands.add_parser("check").add_argument("instance_id", nargs="?")
    commands.add_parser("run", help="run the service (settings from ZAPGATE_HEALTH_*)")
    commands.add_parser("migrate", help="apply health's migrations (ZAPGATE_HEALTH_DATABASE_URL)")
    return parser


async def _request(url: str, subject: str, command: Contract, reply: type[R], timeout: float) -> R:
    # One bounded try: `max_reconnect_attempts=0` made nats-py retry for ever.
    nc = await connect_once(url, timeout=CONNECT_TIMEOUT_S)
    try:
        return await ask(nc, subject, command, reply, timeout=timeout)
    finally:
        await nc.close()


def _health_line(health: InstanceHealth) -> str:
    state = health.state.value + (f"/{health.reason}" if health.reason else "")
    flags = ("" if health.managed else " unmanaged") + (" paused" if health.paused else "")
    since = health.since.isoformat() if health.since else "-"
    checked = health.last_check_at.isoformat() if health.last_check_at else "-"
    return (
        f"{health.instance_id}\t{state}\tphone={health.phone or '-'}\tsince={since}"
        f"\tlast_check={checked}{flags}"
    )


def _read_token(env_name: str, stdin: IO[str]) -> str:
    token = os.environ.get(env_name, "")
    if not token and not stdin.isatty():
        token = stdin.readline().strip()
    if not token:
        raise SystemExit(f"no token: set ${env_name} or pipe it on stdin")
    return token


async def _run_api(args: argparse.Namespace, out: IO[str], stdin: IO[str]) -> int:
    url, timeout = args.nats_url, args.timeout
    if args.command == "instances":
        if args.verb == "list":
            listing = await _request(
                url, subjects.API_HEALTH_LIST, ListInstances(), InstanceListReply, timeout
            )
            for entry in listing.instances:
                managed = "managed" if entry.managed else "unmanaged"
                paused = " paused" if entry.paused else ""
                out.write(f"{entry.instance_id}\t{entry.display_name}\t{managed}{paused}\n")
            return _result(listing, out)
        if args.verb == "add":
            command: Contract = RegisterInstance(
                instance_id=args.instance_id,
                display_name=args.name,
                token=SecretStr(_read_token(args.token_env, stdin)),
                managed=not args.unmanaged,
                replace=args.replace,
            )
            subject = subjects.API_HEALTH_REGISTER
        elif args.verb in {"pause", "resume"}:
            command = PauseInstance(instance_id=args.instance_id, paused=args.verb == "pause")
            subject = subjects.API_HEALTH_PAUSE
        else:
            command = RemoveInstance(instance_id=args.instance_id)
            subject = subjects.API_HEALTH_REMOVE
        registry = await _request(url, subject, command, RegistryReply, timeout)
        if registry.instance is not None:
            out.write(f"{args.verb}: {registry.instance.instance_id}\n")
        return _result(registry, out)
    if args.command == "status":
        health = await _request(
            url,
            subjects.API_HEALTH_GET,
            GetInstanceHealth(instance_id=args.instance_id),
            HealthReply,
            timeout,
        )
        for item in health.instances:
            out.write(_health_line(item) + "\n")
        return _result(health, out)
    checked = await _request(
        url,
        subjects.API_HEALTH_CHECK_NOW,
        CheckNow(instance_id=args.instance_id),
        CheckNowReply,
        timeout,
    )
    for item in checked.checked:
        out.write(_health_line(item) + "\n")
    return _result(checked, out)


def _result(
    reply: RegistryReply | InstanceListReply | HealthReply | CheckNowReply, out: IO[str]
) -> int:
    if reply.ok:
        return 0
    if reply.error is not None:
        out.write(f"erro {reply.error.code}: {reply.error.message}\n")
    return 1


def main(
    argv: list[str] | None = None, *, out: IO[str] | None = None, stdin: IO[str] | None = None
) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    if args.command == "run":
        from zapgate.health.app import create_app  # noqa: PLC0415 - only the service needs it
        from zapgate.health.settings import HealthSettings  # noqa: PLC0415
        from zapgate.runtime.settings import load_settings  # noqa: PLC0415

        asyncio.run(create_app(load_settings(HealthSettings)).run())
        return 0
    if args.command == "migrate":
        from zapgate.health.migrations import SPEC  # noqa: PLC0415
        from zapgate.health.settings import HealthSettings  # noqa: PLC0415
        from zapgate.runtime.db import migrate  # noqa: PLC0415
        from zapgate.runtime.settings import load_settings  # noqa: PLC0415

        migrate(load_settings(HealthSettings).database_url.get_secret_value(), SPEC)
        out.write("migrated: health\n")
        return 0
    try:
        return asyncio.run(_run_api(args, out, stdin or sys.stdin))
    except NatsUnreachableError as error:
        out.write(
            f"erro NATS_UNREACHABLE: não foi possível conectar ao NATS em {error.url} em "
            f"{error.timeout:g} s ({error.reason}).\n"
        )
        return 3
    except NoAnswer:
        out.write("erro HEALTH_UNAVAILABLE: o serviço de saúde não respondeu (está em execução?)\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
