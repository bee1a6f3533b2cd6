"""The process launcher over real child processes: readiness, stop, kill, restart, logs."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from zapgate.devservers.postgres import free_port
from zapgate.localstack.processes import (
    ProcessError,
    ProcessNotReadyError,
    ProcessSpec,
    ServiceProcess,
    resolve_executable,
)

pytestmark = pytest.mark.real

# A tiny service: answers /readyz once READY_AFTER requests have been made (so the launcher must
# poll), logs a line per start, and exits 0 on SIGTERM unless told to ignore it.
_SERVICE = r"""
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

calls = 0
ready_after = int(os.environ.get("READY_AFTER", "0"))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global calls
        calls += 1
        ok = self.path == "/readyz" and calls > ready_after
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"starting")

    def log_message(self, *args):
        pass

if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("service up, secret-free env:", os.environ["GREETING"], flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def _alive(proc: ServiceProcess) -> bool:
    # A call, not the property: mypy would narrow the property across a kill/restart.
    return proc.is_running


def _spec(tmp_path: Path, port: int, **env: str) -> ProcessSpec:
    return ProcessSpec(
        name="toy",
        argv=(sys.executable, "-c", _SERVICE),
        env={"PORT": str(port), "GREETING": "olá", **env},
        ready_url=f"http://127.0.0.1:{port}/readyz",
        log_path=tmp_path / "logs" / "toy.log",
    )


def test_start_returns_once_readyz_answers_200_and_stop_ends_it_with_sigterm(
    tmp_path: Path,
) -> None:
    """start() waits for /readyz (polled past 503s), passes the env, logs, and stop() ends it."""
    port = free_port()
    proc = ServiceProcess(_spec(tmp_path, port, READY_AFTER="3"), ready_timeout=20)
    proc.start()
    try:
        assert _alive(proc)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        code = proc.stop()
    assert code == 0
    assert not _alive(proc)
    log_text = (tmp_path / "logs" / "toy.log").read_text()
    assert "service up, secret-free env: olá" in log_text
    assert "stopped, exit code 0" in log_text


def test_arguments_of_a_process_never_reach_its_log(tmp_path: Path) -> None:
    """The start marker names the program only: an argument may carry a credential (the
    simulator's `--instance id:token:phone`), and the log must not."""
    port = free_port()
    token = "tok-never-logged-0123456789abcdef"
    spec = _spec(tmp_path, port)
    spec = ProcessSpec(
        name=spec.name,
        # A short program text, so the token would sit within any prefix of the command line.
        argv=(sys.executable, "-c", "exec(__import__('os').environ['SRC'])", f"demo:{token}"),
        env={**spec.env, "SRC": _SERVICE},
        ready_url=spec.ready_url,
        log_path=spec.log_path,
    )
    proc = ServiceProcess(spec, ready_timeout=20)
    proc.start()
    proc.stop()
    log_text = spec.log_path.read_text()
    assert '"process_started"' in log_text
    assert token not in log_text


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    """A process that ignores SIGTERM is SIGKILLed once the grace period is over."""
    proc = ServiceProcess(_spec(tmp_path, free_port(), IGNORE_TERM="1"), stop_grace=0.5)
    proc.start()
    code = proc.stop()
    assert code == -9
    assert not _alive(proc)


def test_kill_and_restart_bring_the_process_back_on_the_same_port(tmp_path: Path) -> None:
    """kill() is a SIGKILL; restart() starts a new process that is ready again."""
    port = free_port()
    proc = ServiceProcess(_spec(tmp_path, port), ready_timeout=20)
    proc.start()
    first_pid = proc.pid
    try:
        assert proc.kill() == -9
        assert not _alive(proc)
        proc.restart()
        assert _alive(proc)
        assert proc.pid != first_pid
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.stop()
    assert (tmp_path / "logs" / "toy.log").read_text().count("secret-free env: olá") == 2


def test_a_process_that_exits_while_starting_fails_fast_with_its_log_tail(tmp_path: Path) -> None:
    """When the process dies before it is ready, start() raises with the log's tail."""
    spec = ProcessSpec(
        name="broken",
        argv=(sys.executable, "-c", "import sys; print('no database_url'); sys.exit(3)"),
        ready_url=f"http://127.0.0.1:{free_port()}/readyz",
        log_path=tmp_path / "broken.log",
    )
    proc = ServiceProcess(spec, ready_timeout=30)
    with pytest.raises(ProcessNotReadyError, match="no database_url") as raised:
        proc.start()
    assert "exited with code 3" in str(raised.value)


def test_a_process_never_ready_fails_at_the_deadline(tmp_path: Path) -> None:
    """A process whose /readyz keeps answering 503 fails at the deadline and is left to stop."""
    proc = ServiceProcess(_spec(tmp_path, free_port(), READY_AFTER="1000000"), ready_timeout=1)
    try:
        with pytest.raises(ProcessNotReadyError, match="HTTP 503"):
            proc.start()
        assert _alive(proc)
    finally:
        proc.stop()


def test_an_unknown_console_script_is_reported_by_name() -> None:
    """A console script that is not installed raises a ProcessError naming it."""
    with pytest.raises(ProcessError, match="zapgate-no-such-thing"):
        resolve_executable("zapgate-no-such-thing")


async def test_the_simulator_console_script_starts_and_answers_its_control_api(
    tmp_path: Path,
) -> None:
    """`zapgate-wapi-sim` runs as its own process, ready when /_sim/calls answers."""
    port = free_port()
    proc = ServiceProcess(
        ProcessSpec(
            name="wapi-sim",
            argv=("zapgate-wapi-sim", "--port", str(port), "--instance", "demo:tok:5511999"),
            ready_url=f"http://127.0.0.1:{port}/_sim/calls",
            log_path=tmp_path / "sim.log",
        ),
        ready_timeout=30,
    )
    await proc.start_async()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"http://127.0.0.1:{port}/v1/instance/status-instance",
                params={"instanceId": "demo"},
                headers={"Authorization": "Bearer tok"},
            )
        assert answer.status_code == 200
    finally:
        proc.stop()
