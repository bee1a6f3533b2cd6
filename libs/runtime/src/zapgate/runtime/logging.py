"""The one logging setup: structlog, JSON lines when stdout is not a terminal, every library routed
through it.

Call `configure_service_logging(settings)` (or `configure_logging(...)` outside a service) once,
first thing in a process entrypoint (a service's `run` command, or its `create_app` when a
framework runs the factory). It makes every line the process writes one JSON object:
- structlog's own loggers, and the stdlib loggers of libraries (nats, httpx, alembic, ...) through
  `ProcessorFormatter`;
- uvicorn's (`log_config=None` leaves them to us; the access log included);
- FastStream's: its `faststream` logger and per-broker `faststream.access.<broker>` loggers do not
  propagate and install their own plain-text handlers; they get ours instead. Pass
  `logger=faststream_logger()` to `NatsBroker(...)` and `FastStream(...)` to be explicit;
- an exception nobody caught (`sys.excepthook`) becomes an `unhandled_exception` line.
Secrets never reach a line: keys that look sensitive are masked at any depth, the values given
in `secrets` are masked wherever they appear (the webhook secret in an access-log path too), and
so is the path segment after each of `secret_paths` (default `/webhooks/`).

Conventions (docs/design.md, runtime section): event names are snake_case verbs or facts
(`message_handled`, `nats_connected`); one canonical line per unit of work, with its ids bound
through `structlog.contextvars` (`bind_contextvars`/`bound_contextvars`) so every line of that
unit carries them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from types import TracebackType

    from zapgate.runtime.settings import ServiceSettings

REDACTED = "***"
_SENSITIVE_PARTS = ("token", "secret", "password", "passwd", "authorization", "api_key", "apikey")
# Chatty libraries: their INFO lines cost throughput on hot paths and add nothing per message.
# httpx logs each request at INFO; our own lines (send_attempt, checks) already record every
# provider call with its outcome and latency. FastStream logs "Received"/"Processed" per message;
# our consumer's canonical line says more in one line.
_QUIET_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    # uvicorn started with access_log=False leaves this logger without handlers and with
    # propagate=False for the rest of the process; taking it back here keeps the last call's
    # setup in force (the docstring's promise), whatever server ran before.
    "uvicorn.access",
    "nats",
    "asyncio",
    "httpx",
    "httpcore",
)
FASTSTREAM_LOGGER = "zapgate.faststream"
# FastStream names its per-broker access logger `faststream.access.<broker>`.
_FASTSTREAM_LOGGERS = (
    "faststream",
    "faststream.access",
    "faststream.access.nats",
    "faststream.access.rabbit",
    "faststream.access.kafka",
    "faststream.access.redis",
)
DEFAULT_SECRET_PATHS = ("/webhooks/",)
_EXTRA_FIELDS = ("subject", "queue", "stream", "message_id", "status_code", "client_addr")


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SENSITIVE_PARTS)


def url_for_log(url: str) -> str:
    """`url` without the user and password it may carry, for a log line.

    `nats://harness:s3cret@127.0.0.1:4222` -> `nats://127.0.0.1:4222`; a bare authority
    (`user:pw@host:port`, as nats-py's `connected_url.netloc`) -> `host:port`; a comma-separated
    server list is cleaned URL by URL. Everything else (scheme, host, port, path) is kept.
    """
    return ",".join(_without_userinfo(part) for part in url.split(","))


def _without_userinfo(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    return f"{scheme}{separator}{authority.rpartition('@')[2]}{slash}{path}"


def redact(value: Any) -> Any:  # noqa: ANN401 - log values are whatever callers bound
    """A copy of `value` with every sensitive key's value masked, in nested mappings/lists too."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_sensitive_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    return value


def redact_processor(
    _logger: Any,  # noqa: ANN401 - structlog's processor signature
    _method: str,
    event_dict: MutableMapping[str, Any],
) -> MutableMapping[str, Any]:
    """structlog processor: mask sensitive keys anywhere in the event."""
    for key in list(event_dict):
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(event_dict[key])
    return event_dict


class SecretMasker:
    """structlog processor: mask secret values and secret path segments inside every string.

    `secrets`: exact values (e.g. the webhook secrets); `secret_paths`: prefixes such as
    `/webhooks/` whose next path segment is a secret (`/webhooks/abc?x` -> `/webhooks/***?x`).
    """

    def __init__(self, secrets: Iterable[str] = (), secret_paths: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._prefixes = tuple(path for path in secret_paths if path)
        paths = [re.escape(path) for path in self._prefixes]
        self._path = re.compile(rf"({'|'.join(paths)})[^/?#\s\"']+") if paths else None

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        # The substring test first: the regex ran on every string of every line (1 % of the
        # sender's CPU), and almost none holds a secret path.
        if self._path is not None and any(prefix in text for prefix in self._prefixes):
            text = self._path.sub(rf"\g<1>{REDACTED}", text)
        return text

    def _masked(self, value: Any) -> Any:  # noqa: ANN401 - log values are whatever callers bound
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {key: self._masked(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._masked(item) for item in value)
        return value

    def __call__(
        self,
        _logger: Any,  # noqa: ANN401 - structlog's processor signature
        _method: str,
        event_dict: MutableMapping[str, Any],
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._masked(value)
        return event_dict


def faststream_logger() -> logging.Logger:
    """The stdlib logger to pass as `logger=` to `NatsBroker(...)` and `FastStream(...)`: it
    propagates to the root handler `configure_logging` installs, so FastStream's lines are JSON."""
    return logging.getLogger(FASTSTREAM_LOGGER)


def configure_service_logging(settings: ServiceSettings) -> None:
    """`configure_logging` as every service does it: the settings' `log_json` and `log_level`,
    and every value of `settings.log_secrets()` masked."""
    configure_logging(
        json=settings.log_json, level=settings.log_level, secrets=settings.log_secrets()
    )


def configure_logging(
    *,
    json: bool | None = None,
    level: str = "INFO",
    secrets: Iterable[str] = (),
    secret_paths: Iterable[str] = DEFAULT_SECRET_PATHS,
) -> None:
    """Configure structlog and every stdlib logger; `json=None` means JSON unless stdout is a TTY.

    Idempotent: calling it again replaces the previous setup (the last call wins).
    """
    use_json = (not sys.stdout.isatty()) if json is None else json
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    masker = SecretMasker(secrets, secret_paths)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_processor,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Lines of stdlib loggers: their `extra` fields (FastStream's subject, uvicorn's status)
        # become keys of the JSON object.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=_EXTRA_FIELDS)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if use_json else []),
            # Last before rendering: the traceback and the formatted message are masked too.
            masker,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    quiet = max(numeric_level, logging.WARNING)
    for name in _QUIET_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
        library_logger.disabled = False
        library_logger.setLevel(quiet)
    logging.getLogger(FASTSTREAM_LOGGER).setLevel(quiet)
    _take_over_faststream(handler, quiet)
    sys.excepthook = _log_unhandled


def _take_over_faststream(handler: logging.Handler, level: int) -> None:
    # FastStream creates `faststream` at import and `faststream.access.<broker>` when a broker
    # starts, each with propagate=False and a plain-text StreamHandler, unless the logger already
    # has a StreamHandler on stdout. Giving them ours (a stdout StreamHandler) keeps theirs out.
    for name in _FASTSTREAM_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers[:] = [handler]
        library_logger.propagate = False
        library_logger.disabled = False
        library_logger.setLevel(level)


def _log_unhandled(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    structlog.get_logger("zapgate").critical(
        "unhandled_exception", exc_info=(kind, error, traceback)
    )
