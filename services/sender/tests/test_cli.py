"""`zapgate-sender` answers bad input and an unreachable NATS with coded pt-BR lines."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

import pytest

from zapgate.sender.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never says a word (a NATS behind a dead proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


@pytest.mark.parametrize("where", ["refused", "silent", "unknown host"])
def test_an_unreachable_nats_is_a_coded_error_after_the_stated_timeout(
    where: str, silent_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused, silent or unresolvable: `erro NATS_UNREACHABLE` naming the timeout, exit 3."""
    url = {
        "refused": f"nats://127.0.0.1:{_closed_port()}",
        "silent": f"nats://127.0.0.1:{silent_server}",
        "unknown host": "nats://no-such-host.invalid:4222",
    }[where]

    status = main(["--nats-url", url, "--connect-timeout", "0.5", "outcome", "c-1"])

    err = capsys.readouterr().err
    assert status == 3
    assert err.startswith("erro NATS_UNREACHABLE: não foi possível conectar ao NATS")
    assert "em 0.5 s" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code", "status"),
    [
        (["send", "text", "inst-1", "abc", "oi"], "INVALID_COMMAND", 2),
        (["send", "text", "inst 1", "5584988887777", "oi"], "INVALID_COMMAND", 2),
        (["send", "document", "inst-1", "5584988887777", "https://x/a.pdf"], "INVALID_ARGUMENT", 2),
        (["send", "fax", "inst-1", "5584988887777", "oi"], "INVALID_ARGUMENT", 2),
        (["--timeout", "soon", "outcome", "c-1"], "INVALID_ARGUMENT", 2),
        ([], "INVALID_ARGUMENT", 2),
    ],
)
def test_bad_input_is_a_coded_portuguese_error_and_never_reaches_nats(
    argv: list[str], code: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments and invalid commands are refused before connecting (the URL is closed)."""
    closed = f"nats://127.0.0.1:{_closed_port()}"

    result = main(["--nats-url", closed, "--connect-timeout", "0.5", *argv])

    err = capsys.readouterr().err
    assert result == status
    assert err.startswith(f"erro {code}: ")
    assert "Traceback" not in err


def test_a_formatted_phone_is_accepted_by_the_cli_and_only_nats_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`+55 (84) 98888-7777` passes the CLI's validation: the only error left is NATS."""
    closed = f"nats://127.0.0.1:{_closed_port()}"

    options = ["--nats-url", closed, "--connect-timeout", "0.5"]

    status = main([*options, "send", "text", "inst-1", "+55 (84) 98888-7777", "oi"])

    assert status == 3
    assert capsys.readouterr().err.startswith("erro NATS_UNREACHABLE")
