"""Start, watch, stop, kill and restart one zapgate process (a service or the simulator).

A `ServiceProcess` runs a console script (`zapgate-ingest run`, `zapgate-wapi-sim ...`) in its
own session with an environment of its own, appends its output to a log file, and knows it is
ready when an HTTP GET of its readiness URL (a service's `/readyz`) answers 200 inside a bounded
deadline. Used by the local stack (`zapgate-up`), the demo and the end-to-end tests.

    proc = ServiceProcess(ProcessSpec(
        name="ingest",
        argv=("zapgate-ingest", "run"),
        env={"ZAPGATE_INGEST_NATS_URL": ..., "ZAPGATE_INGEST_PROBE_PORT": "18081", ...},
        ready_url="http://127.0.0.1:18081/readyz",
        log_path=Path(".zapgate/logs/ingest.log"),
    ))
    proc.start()           # returns once /readyz answers 200 (or raises ProcessNotReadyError)
    proc.restart(kill=True)
    proc.stop()            # SIGTERM, then SIGKILL after the grace period
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Self

import httpx
import structlog

log = structlog.get_logger("zapgate.localstack.processes")

DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_STOP_GRACE_S = 10.0
_POLL_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 2.0
_TAIL_BYTES = 64 * 1024


class ProcessError(RuntimeError):
    """A process could not be started, or ended when it should be running."""


class ProcessNotReadyError(ProcessError):
    """The process did not become ready inside its deadline, or exited while starting."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and how to tell it is ready.

    `argv[0]` is a console script name (looked up next to the running interpreter first, so
    the workspace's `.venv/bin` is found even when it is not on `PATH`) or a path.
    `env` is added to (and overrides) the parent's environment unless `inherit_env` is False.
    `ready_url` None means ready as soon as it has started.
    """

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    cwd: Path | None = None
    inherit_env: bool = True


def resolve_executable(name: str) -> str:
    """The path of console script `name`: beside `sys.executable`, else on `PATH`."""
    if os.sep in name:
        return name
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ProcessError(f"{name!r} is not installed (run `./taskw` once to sync the workspace)")
    return found


class ServiceProcess:
    """One long-running process; `start()` may be called again after `stop()` or `kill()`."""

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        stop_grace: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        self.spec = spec
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"ServiceProcess(name={self.spec.name!r}, pid={self.pid_or_none})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessError(f"{self.name} has not been started")
        return self._popen.pid

    @property
    def pid_or_none(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); the exit code once it has ended."""
        return self._popen.poll() if self._popen is not None else None

    @property
    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True) -> Self:
        """Launch the process (no-op when running) and, by default, wait until it is ready."""
        if not self.is_running:
            self._launch()
        if wait_ready:
            self.wait_ready()
        return self

    async def start_async(self, *, wait_ready: bool = True) -> Self:
        """`start()` on a worker thread, so an event loop keeps running while it waits."""
        return await asyncio.to_thread(self.start, wait_ready=wait_ready)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the readiness URL until it answers 200; raise when the deadline passes first
        or the process exits (with the tail of its log in the message)."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        url = self.spec.ready_url
        last = "no answer yet"
        with httpx.Client(timeout=_PROBE_TIMEOUT_S) as client:
            while True:
                if not self.is_running:
                    raise ProcessNotReadyError(
                        f"{self.name} exited with code {self.returncode} while starting; "
                        f"log {self.spec.log_path}:\n{self.log_tail()}"
                    )
                if url is None:
                    return
                try:
                    answer = client.get(url)
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                else:
                    if answer.status_code == httpx.codes.OK:
                        log.info("process_ready", process=self.name, pid=self.pid, url=url)
                        return
                    last = f"HTTP {answer.status_code}: {answer.text[:200]}"
                if time.monotonic() >= deadline:
                    raise ProcessNotReadyError(
                        f"{self.name} was not ready at {url} in time ({last}); "
                        f"log {self.spec.log_path}:\n{self.log_tail()}"
                    )
                # Readiness is polled inside a bounded deadline: there is no event to wait on
                # across a process boundary short of parsing its log.
                time.sleep(_POLL_INTERVAL_S)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM and wait up to `grace` seconds; SIGKILL if it is still running. Returns the
        exit code (None if it was never started)."""
        popen = self._popen
        if popen is None or (popen.poll() is not None and self._log_file is None):
            return popen.returncode if popen is not None else None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(self.stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                log.warning("process_kill_after_grace", process=self.name, pid=popen.pid)
                self._kill_group(popen)
                popen.wait()
        self._close_log(f"stopped, exit code {popen.returncode}")
        log.info("process_stopped", process=self.name, pid=popen.pid, code=popen.returncode)
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process and everything it forked: the crash case."""
        popen = self._popen
        if popen is None or (popen.poll() is not None and self._log_file is None):
            return popen.returncode if popen is not None else None
        if popen.poll() is None:
            self._kill_group(popen)
            popen.wait()
        self._close_log(f"killed, exit code {popen.returncode}")
        log.info("process_killed", process=self.name, pid=popen.pid, code=popen.returncode)
        return popen.returncode

    def restart(self, *, kill: bool = False, wait_ready: bool = True) -> Self:
        """Stop (or kill) and start again with the same spec."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(wait_ready=wait_ready)

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the process (e.g. SIGSTOP/SIGCONT to freeze it)."""
        if self.is_running and self._popen is not None:
            self._popen.send_signal(signum)

    def log_tail(self, max_bytes: int = 4096) -> str:
        """The last `max_bytes` of the process's log file."""
        path = self.spec.log_path
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - min(max_bytes, _TAIL_BYTES)))
            return handle.read().decode("utf-8", errors="replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------------

    def _launch(self, *, write_header: bool = True) -> None:
        argv = [resolve_executable(self.spec.argv[0]), *self.spec.argv[1:]]
        env = dict(os.environ) if self.spec.inherit_env else {}
        env.update(self.spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log(None)
        log_file = self.spec.log_path.open("ab")
        if write_header:
            # A JSON line like the service's own, so every line of the log parses.
            # The program only: arguments can carry credentials (the simulator's instance token).
            log_file.write(_marker("process_started", program=Path(self.spec.argv[0]).name))
            log_file.flush()
        try:
            # Own session: a terminal's Ctrl-C reaches only the launcher, which stops the
            # processes in order; a kill reaches whatever the process forked.
            self._popen = subprocess.Popen(  # noqa: S603 - argv comes from the caller's spec
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            log_file.close()
            raise ProcessError(f"cannot start {self.name}: {exc}") from exc
        self._log_file = log_file
        log.info(
            "process_started",
            process=self.name,
            pid=self._popen.pid,
            program=Path(self.spec.argv[0]).name,
        )

    def _kill_group(self, popen: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                popen.kill()

    def _close_log(self, footer: str | None) -> None:
        if self._log_file is None:
            return
        if footer is not None:
            self._log_file.write(_marker("process_stopped", detail=footer))
        self._log_file.close()
        self._log_file = None


def _marker(event: str, **fields: str) -> bytes:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    line = {"timestamp": stamp, "level": "info", "logger": "zapgate.localstack", "event": event}
    return (json.dumps({**line, **fields}) + "\n").encode()
