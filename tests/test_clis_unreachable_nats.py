"""Both operator CLIs give up on an unreachable NATS with a coded pt-BR line, no traceback."""

from __future__ import annotations

import io
import socket

import pytest

from zapgate.health import cli as health_cli


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("argv", [["status"], ["instances", "list"], ["check", "inst-1"]])
def test_health_cli_reports_an_unreachable_nats_with_its_code(argv: list[str]) -> None:
    """`zapgate-health` against a closed port: exit 3 and `erro NATS_UNREACHABLE` at once."""
    out = io.StringIO()

    status = health_cli.main(["--nats-url", f"nats://127.0.0.1:{_closed_port()}", *argv], out=out)

    assert status == 3
    assert out.getvalue().startswith("erro NATS_UNREACHABLE: não foi possível conectar ao NATS")
    assert "em 5 s" in out.getvalue()
