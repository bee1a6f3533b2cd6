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
from typing import TYPE_CHECKING, NoReturn

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from zapgate.contracts.client import (
    CommandNotAcceptedError,
    NatsUnreachableError,
    SenderClient,
    SendTimeoutError,
    connect_once,
)
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.sending import (
    AudioContent,
    DocumentContent,
    ImageContent,
    SendMessage,
    TextContent,
    VideoContent,
)
from zapgate.runtime.requests import invalid_request
from zapgate.sender.domain import with_field_hints

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zapgate.contracts.sending import SendOutcome

NATS_URL_ENV = "ZAPGATE_SENDER_NATS_URL"
CONNECT_TIMEOUT_S = 5.0


class CliError(Exception):
    """A refusal the CLI prints as `erro <CODE>: <mensagem em pt-BR>` with its exit status."""

    def __init__(self, code: str, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class _Parser(argparse.ArgumentParser):
    # argparse prints English usage and exits; the CLI answers with a code and pt-BR instead.
    def error(self, message: str) -> NoReturn:
        raise CliError(
            "INVALID_ARGUMENT",
            f"argumento inválido ({message}). Veja: zapgate-sender --help",
            status=2,
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zapgate-sender", description=__doc__.split("\n")[0])
    parser.add_argument("--nats-url", default=os.environ.get(NATS_URL_ENV, "nats://127.0.0.1:4222"))
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        help=f"seconds to reach NATS before giving up (default {CONNECT_TIMEOUT_S:g})",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for outcomes")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    send = verbs.add_parser("send", help="send one message and print its outcome")
    send.add_argument("kind", choices=["text", "image", "audio", "video", "document"])
    send.add_argument("instance_id")
    send.add_argument("phone", help="with country code; +, spaces and JIDs are accepted")
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
        raise CliError("INVALID_ARGUMENT", "documento precisa de --extension (o W-API exige).", 2)
    return DocumentContent(
        document=args.content,
        extension=args.extension,
        file_name=args.file_name,
        caption=args.caption,
    )


def _command(args: argparse.Namespace) -> SendMessage:
    try:
        return SendMessage(
            command_id=args.command_id or f"cli-{uuid.uuid4().hex}",
            instance_id=args.instance_id,
            phone=args.phone,
            body=_body(args),
            quoted_message_id=args.quoted,
            delay_message=args.delay,
            hold_for=timedelta(seconds=args.hold_for),
        )
    except ValidationError as error:
        fields = with_field_hints(invalid_request(error)).fields or {}
        listed = "; ".join(f"{name}: {text}" for name, text in fields.items())
        raise CliError(ErrorCode.INVALID_COMMAND.value, f"comando inválido: {listed}", 2) from error


async def _client_verb(args: argparse.Namespace) -> SendOutcome | None:
    command = _command(args) if args.verb == "send" else None
    try:
        nc = await connect_once(args.nats_url, timeout=args.connect_timeout)
    except NatsUnreachableError as error:
        raise CliError(
            "NATS_UNREACHABLE",
            f"não foi possível conectar ao NATS em {args.nats_url} em {args.connect_timeout:g} s"
            f" ({error.reason}). Verifique --nats-url ou ${NATS_URL_ENV}.",
            3,
        ) from error
    try:
        client = SenderClient(nc)
        if args.verb == "outcome":
            return await client.outcome(args.command_id)
        if args.verb == "retry":
            return await client.retry(args.command_id, args.new_command_id, timeout=args.timeout)
        assert command is not None  # noqa: S101 - `send` built it above
        return await client.send(command, timeout=args.timeout)
    finally:
        await nc.close()


async def _run_service() -> None:
    # Only the `run` verb needs the service: the client verbs stay light.
    from zapgate.runtime.logging import configure_service_logging  # noqa: PLC0415
    from zapgate.runtime.settings import load_settings  # noqa: PLC0415
    from zapgate.sender.app import create_app  # noqa: PLC0415
    from zapgate.sender.settings import SenderSettings  # noqa: PLC0415

    settings = load_settings(SenderSettings)
    configure_service_logging(settings)
    await create_app(settings, configure_logs=False).run()


def _migrate() -> int:
    from zapgate.runtime.db import migrate  # noqa: PLC0415 - only the `migrate` verb needs it
    from zapgate.runtime.settings import load_settings  # noqa: PLC0415
    from zapgate.sender.migrations import SPEC  # noqa: PLC0415
    from zapgate.sender.settings import SenderSettings  # noqa: PLC0415

    settings = load_settings(SenderSettings)
    migrate(settings.database_url.get_secret_value(), SPEC)
    sys.stdout.write("migrated: sender\n")
    return 0


def _verb(args: argparse.Namespace) -> int:
    if args.verb == "run":
        asyncio.run(_run_service())
        return 0
    if args.verb == "migrate":
        return _migrate()
    try:
        outcome = asyncio.run(_client_verb(args))
    except SendTimeoutError as exc:
        raise CliError(
            "SEND_TIMEOUT",
            f"sem resultado final em {args.timeout:g} s; o comando está guardado. Consulte "
            f"depois com: zapgate-sender outcome {exc.command_id}",
            2,
        ) from exc
    except CommandNotAcceptedError as exc:
        raise CliError(
            "COMMAND_NOT_STORED", f"o comando não foi aceito pelo JetStream ({exc}).", 1
        ) from exc
    except (NoRespondersError, NatsTimeoutError) as exc:
        raise CliError(
            "SENDER_UNAVAILABLE", "o serviço de envio não respondeu (está em execução?).", 2
        ) from exc
    if outcome is None:
        raise CliError(ErrorCode.NOT_FOUND.value, "nenhum resultado guardado para este comando.")
    sys.stdout.write(outcome.model_dump_json(indent=2) + "\n")
    return 0 if outcome.error is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; a refusal or failure prints `erro CODE: mensagem` (pt-BR), no traceback."""
    try:
        return _verb(_parser().parse_args(argv))
    except CliError as error:
        sys.stderr.write(f"erro {error.code}: {error.message}\n")
        return error.status
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - the user gets a coded line, never a traceback
        sys.stderr.write(f"erro INTERNAL: {type(error).__name__}: {str(error)[:300]}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
