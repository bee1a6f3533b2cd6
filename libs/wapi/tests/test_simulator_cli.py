"""`zapgate-wapi-sim` as its own process: its log is JSON lines like every other process's."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

SIM = Path(sys.executable).parent / "zapgate-wapi-sim"


def test_a_failed_start_is_logged_as_json_lines() -> None:
    """A taken port: uvicorn's bind error reaches the log as JSON, never its plain-text format."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(  # noqa: S603 - our own console script
            [str(SIM), "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0
    assert lines
    events = [json.loads(line) for line in lines]
    assert any("address already in use" in event["event"] for event in events)
    assert all(event["level"] and event["logger"] for event in events)
