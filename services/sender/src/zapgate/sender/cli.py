"""`zapgate-sender`: send, look up, retry, run the service, migrate its tables.

zapgate-sender send text INSTANCE PHONE "olá" [--id ID] [--hold-for 60]
zapgate-sender send image|audio|video INSTANCE PHONE URL [--caption ...]
zapgate-sender send document INSTANCE PHONE URL --extension pdf [--file-name a.pdf]
zapgate-sender outcome ID
zapgate-sender retry ID NEW_ID
zapgate-sender run
zapgate-sender migrate
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import nats

from zapgate.contracts.client import CommandNotAcceptedError, SenderClient, SendTimeoutError
from zapgate.contracts.sending import (
    AudioContent,
    DocumentContent,
    ImageContent,
    SendMessage,
    TextContent,
    VideoContent,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zapgate.contracts.sending import SendOutcome

NATS_URL_ENV = "ZAPGATE_SENDER_NATS_URL"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zapgate-sender", description=__doc__.split("\n")[0])
    parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, "nats://127.0.0.1:4222"))
    parser.add_argument("--timeout", type=float, default=30.0)
    verbs = parser.add_subparsers(dest="verb", required=True)
    send = verbs.add_parser("send", help="send one message and print its outcome")
    send.add_argument("kind", choices=["text", "image", "audio", "video", "document"])
    send.add_argument("instance_id")
    send.add_argument("phone")
    send.add_argument("content", help="the text, or a media URL / data: URI")
    send.add_argument("--id", dest="command_id", default=None)
    send.add_argument("--caption", default=None)
    send.add_argument("--extension", default=None)
    send.add_argument("--file-name", default=None)
    send.add_argument("--quoted", default=None, help="messageId to reply to")
    send.add_argument("--delay", type=int, default=None, help="delayMessage seconds")
    send.add_argument("--hold-for", type=float, default=0.0, help="seconds to wait for recovery")
    outcome = verbs.add_parser("outcome", help="print the stored outcome of a command")
    outcome.add_argument("command_id")
    retry = verbs.add_parser("retry", help="retry a failed send as a new command")
    retry.add_argument("command_id")
    retry.add_argument("new_command_id")
    verbs.add_parser("run", help="run the sender service")
    verbs.add_parser("migrate", help="bring the sender's tables to head")
    return parser


def _body(
    args: argparse.Namespace,
) -> TextContent | ImageContent | AudioContent | VideoContent | DocumentContent:
    if args.kind == "text":
        return TextContent(message=args.content)
    if args.kind == "image":
        return ImageContent(image=args.content, caption=args.caption)
    if args.kind == "audio":
        return AudioContent(audio=args.content)
    if args.kind == "video":
        return VideoContent(video=args.content, caption=args.caption)
    if not args.extension:
        raise SystemExit("document needs --extension (W-API requires it)")
    return DocumentContent(
        document=args.content,
        extension=args.extension,
        file_name=args.file_name,
        caption=args.caption,
    )


async def _client_verb(args: argparse.Namespace) -> SendOutcome | None:
    nc = await nats.connect(args.nats_url, connect_timeout=5)
    try:
        client = SenderClient(nc)
        if args.verb == "outcome":
            return await client.outcome(args.command_id)
        if args.verb == "retry":
            return await client.retry(args.command_id, args.new_command_id, timeout=args.timeout)
        command = SendMessage(
            command_id=args.command_id or f"cli-{uuid.uuid4().hex}",
            instance_id=args.instance_id,
            phone=args.phone,
            body=_body(args),
            quoted_message_id=args.quoted,
            delay_message=args.delay,
            hold_for=timedelta(seconds=args.hold_for),
        )
        return await client.send(command, timeout=args.timeout)
    finally:
        await nc.close()


async def _run_service() -> None:
    from zapgate.sender.app import create_app  # noqa: PLC0415 - only the `run` verb needs it

    await create_app().run()


def _migrate() -> int:
    from zapgate.runtime.db import migrate  # noqa: PLC0415 - only the `migrate` verb needs it
    from zapgate.sender.migrations import SPEC  # noqa: PLC0415
    from zapgate.sender.settings import SenderSettings  # noqa: PLC0415

    settings = SenderSettings()
    migrate(settings.database_url.get_secret_value(), SPEC)
    sys.stdout.write("migrated: sender\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "run":
        asyncio.run(_run_service())
        return 0
    if args.verb == "migrate":
        return _migrate()
    try:
        outcome = asyncio.run(_client_verb(args))
    except SendTimeoutError as exc:
        sys.stderr.write(f"{exc}; ask later with: zapgate-sender outcome {exc.command_id}\n")
        return 2
    except CommandNotAcceptedError as exc:
        sys.stderr.write(f"not accepted: {exc}\n")
        return 1
    if outcome is None:
        sys.stderr.write("no outcome stored for this command\n")
        return 1
    sys.stdout.write(outcome.model_dump_json(indent=2) + "\n")
    return 0 if outcome.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
