"""Both operator CLIs give up on an unreachable NATS with a coded pt-BR line, no traceback."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize(
    ("script", "argv"),
    [("zapgate-sender", ["outcome", "c-1"]), ("zapgate-health", ["status"])],
)
def test_the_installed_cli_prints_one_line_and_no_traceback(script: str, argv: list[str]) -> None:
    """As a process (no logging set up): only the coded line, not nats-py's connect traceback."""
    url = f"nats://127.0.0.1:{_closed_port()}"

    done = subprocess.run(  # noqa: S603 - our own console scripts
        [str(Path(sys.executable).parent / script), "--nats-url", url, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 3
    assert len(output) == 1, output
    assert output[0].startswith("erro NATS_UNREACHABLE: ")


@pytest.mark.real
def test_health_cli_says_the_service_did_not_answer_when_nats_has_no_health(
    nats_url: str,
) -> None:
    """A reachable NATS where no health service answers: exit 2 and the pt-BR line at once
    (no responders), not a traceback."""
    out = io.StringIO()

    status = health_cli.main(["--nats-url", nats_url, "status"], out=out)

    assert status == 2
    assert out.getvalue() == (
        "erro HEALTH_UNAVAILABLE: o serviço de saúde não respondeu (está em execução?)\n"
    )
