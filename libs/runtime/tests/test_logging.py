"""The one logging setup: every line a process writes is a JSON object, and secrets are masked."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from typing import TYPE_CHECKING

import pytest
import structlog
import uvicorn
from faststream import FastStream
from faststream.nats import NatsBroker, TestNatsBroker
from pydantic import SecretStr

from zapgate.runtime.logging import (
    REDACTED,
    SecretMasker,
    configure_logging,
    configure_service_logging,
    faststream_logger,
    url_for_log,
)
from zapgate.runtime.settings import ServiceSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.unit

_TOUCHED = (
    "",
    "faststream",
    "faststream.access",
    "faststream.access.nats",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
)


@pytest.fixture(autouse=True)
def _logging_is_restored() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the next test."""
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
        )
        for name in _TOUCHED
    }
    levels = {name: logging.getLogger(name).level for name in _TOUCHED}
    hook = sys.excepthook
    yield
    for name, (handlers, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled
        logger.setLevel(levels[name])
    sys.excepthook = hook
    structlog.contextvars.clear_contextvars()


def _lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


async def test_faststream_uvicorn_library_and_own_lines_are_all_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A FastStream app with a subscriber, uvicorn's access logger (after uvicorn's own logging
    config ran first), a library logger and our own logger: every line on stdout parses as one
    JSON object with a level and a timestamp."""
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    configure_logging(json=True, level="INFO")
    broker = NatsBroker(logger=faststream_logger())
    app = FastStream(broker, logger=faststream_logger())
    handled: list[str] = []

    @broker.subscriber("zg.test.logging")
    async def on_message(body: str) -> None:
        structlog.get_logger("zapgate.test").info("message_handled", body=body)
        handled.append(body)

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish("hello", "zg.test.logging")
    logging.getLogger("faststream").warning("FastStream app starting...")
    logging.getLogger("faststream.access.nats").warning("Received", extra={"subject": "zg.x"})
    logging.getLogger("uvicorn.access").warning(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/webhooks/s3cr3t?x=1", "1.1", 200
    )
    logging.getLogger("nats.aio.client").warning("nats: encountered error")
    del app

    records = _lines(capsys.readouterr().out)
    assert handled == ["hello"]
    assert all({"event", "level", "timestamp"} <= record.keys() for record in records)
    events = [str(record["event"]) for record in records]
    assert "message_handled" in events
    assert "FastStream app starting..." in events
    access = next(event for event in events if "HTTP/1.1" in event)
    assert "s3cr3t" not in access
    assert f"/webhooks/{REDACTED}?x=1" in access
    received = next(record for record in records if record["event"] == "Received")
    assert received["subject"] == "zg.x"


def test_a_server_run_earlier_without_access_log_does_not_silence_the_next_setup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """uvicorn with access_log=False detaches `uvicorn.access` for the whole process; the next
    configure_logging takes it back, so its lines are JSON again (order-dependent before)."""

    async def app(scope: object, receive: object, send: object) -> None:
        del scope, receive, send

    uvicorn.Config(app, access_log=False)
    configure_logging(json=True, level="INFO")
    logging.getLogger("uvicorn.access").warning('%s - "%s %s"', "127.0.0.1:1", "GET", "/readyz")

    records = _lines(capsys.readouterr().out)
    assert [record["event"] for record in records] == ['127.0.0.1:1 - "GET /readyz"']


def test_configured_secret_values_are_masked_anywhere_in_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A secret value given to configure_logging never appears, whichever field carries it."""
    configure_logging(json=True, secrets=["tok-123456"])
    log = structlog.get_logger("zapgate.test")
    log.warning("provider_failed", url="https://x/instance?token=tok-123456", detail=["tok-123456"])
    logging.getLogger("httpx").warning("GET https://x/tok-123456 401")

    out = capsys.readouterr().out
    assert "tok-123456" not in out
    assert [record["event"] for record in _lines(out)] == [
        "provider_failed",
        f"GET https://x/{REDACTED} 401",
    ]


def test_a_service_logs_with_the_secrets_of_its_settings_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`configure_service_logging` masks what the settings list: the database URL among them."""
    url = "postgresql://zapgate_sender:Xq8jT2v9LmP4wRz7KcN1bYh6@db:5432/zapgate"
    settings = ServiceSettings(environment="dev", database_url=SecretStr(url), log_json=True)
    configure_service_logging(settings)
    structlog.get_logger("zapgate.test").error("database_unreachable", error=f"no route to {url}")

    out = capsys.readouterr().out
    assert url not in out
    assert [record["error"] for record in _lines(out)] == [f"no route to {REDACTED}"]


def test_an_uncaught_exception_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """sys.excepthook writes an `unhandled_exception` line with the traceback inside it."""
    configure_logging(json=True)
    try:
        raise RuntimeError("boom")  # noqa: TRY301 - raised to get a real traceback
    except RuntimeError as error:
        sys.excepthook(type(error), error, error.__traceback__)

    [record] = _lines(capsys.readouterr().out)
    assert record["event"] == "unhandled_exception"
    assert record["level"] == "critical"
    assert "RuntimeError: boom" in str(record["exception"])


def test_secret_masker_masks_path_segments_and_longest_secret_first() -> None:
    """`/webhooks/<x>` loses <x> up to `/`, `?`, `#`, a quote or whitespace."""
    masker = SecretMasker(["abc", "abcdef"], ["/webhooks/"])
    assert (
        masker.mask('"POST /webhooks/s.e-c?x HTTP/1.1"')
        == f'"POST /webhooks/{REDACTED}?x HTTP/1.1"'
    )
    assert masker.mask("k=abcdef") == f"k={REDACTED}"
    assert masker.mask("/webhooks/a/b") == f"/webhooks/{REDACTED}/b"


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("nats://harness:s3cret@127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://token@nats.internal:4222", "nats://nats.internal:4222"),
        ("harness:s3cret@127.0.0.1:4222", "127.0.0.1:4222"),
        ("nats://a:p1@n1:4222,nats://b:p2@n2:4222", "nats://n1:4222,nats://n2:4222"),
        ("postgresql+psycopg://u:p%40w@db:5432/zapgate", "postgresql+psycopg://db:5432/zapgate"),
        ("https://u:p@host/path?q=a@b", "https://host/path?q=a@b"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ],
)
def test_url_for_log_drops_user_and_password_and_keeps_the_rest(url: str, logged: str) -> None:
    assert url_for_log(url) == logged
