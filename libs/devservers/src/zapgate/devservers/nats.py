"""A real `nats-server` (>= 2.14, JetStream on) as a local child process."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Self

from zapgate.devservers._binaries import nats_server_binary
from zapgate.devservers._process import ManagedProcess, ProcessExitedError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from types import TracebackType

    from zapgate.devservers.nats_auth import DevCredentials

MIN_VERSION = (2, 14)

_LISTENING = re.compile(r"Listening for client connections on \S+:(\d+)")
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_ADDRESS_IN_USE = "address already in use"
_RESTART_ATTEMPTS = 20


class NatsServerError(RuntimeError):
    """nats-server failed to start, or is too old."""


def nats_server_version(binary: Path) -> tuple[int, int, int]:
    # S603: the binary path comes from nats_server_binary(), not from input.
    out = subprocess.run(  # noqa: S603
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = _VERSION.search(out)
    if found is None:
        raise NatsServerError(f"cannot read the version of {binary}: {out!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


class NatsServer:
    """nats-server on 127.0.0.1 with JetStream in `store_dir`.

    `restart()` keeps the port and the store dir, so stored messages survive it.
    """

    def __init__(  # noqa: PLR0913 - the knobs a cluster or fault test needs, all keyword-only
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
        start_timeout: float = 10.0,
        log_path: Path | None = None,
        auth: DevCredentials | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._config_file = config_file
        self._extra_args = tuple(extra_args)
        self._binary = binary
        self._start_timeout = start_timeout
        self._log_path = log_path
        self._process: ManagedProcess | None = None
        self._version: tuple[int, int, int] | None = None
        self.auth = auth
        if auth is not None:
            if config_file is not None:
                raise NatsServerError("pass either auth or config_file")
            # zapgate's users and permissions (nats_auth.py) plus the test harness user.
            self._config_file = store_dir.parent / f"{store_dir.name}-auth.conf"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = nats_server_binary()
        return self._binary

    @property
    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            self._version = nats_server_version(self.binary)
        return self._version

    @property
    def port(self) -> int:
        if self._port is None:
            raise NatsServerError("nats-server has not started yet")
        return self._port

    @property
    def url(self) -> str:
        """The client URL; with `auth`, it logs in as the harness user (every permission)."""
        if self.auth is not None:
            return self.auth.harness_url(self.host, self.port)
        return f"nats://{self.host}:{self.port}"

    @property
    def anonymous_url(self) -> str:
        """The client URL without credentials (a server with `auth` refuses it)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def start(self) -> Self:
        if self.is_running:
            return self
        if self.version[:2] < MIN_VERSION:
            raise NatsServerError(
                f"{self.binary} is nats-server {'.'.join(map(str, self.version))}; zapgate needs "
                f">= {'.'.join(map(str, MIN_VERSION))} (message schedules)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self.auth is not None and self._config_file is not None:
            self.auth.write_server_config(self._config_file)
        self._launch(self._port if self._port is not None else self._requested_port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: JetStream flushes) and wait; SIGKILL if it hangs."""
        if self._process is not None:
            self._process.terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case, JetStream recovers from its files on the next start."""
        if self._process is not None:
            self._process.kill()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same store dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        # The old listener may linger for a moment after a kill; retry the bind, bounded.
        for attempt in range(_RESTART_ATTEMPTS):
            try:
                self._launch(self._port)
            except NatsServerError as exc:
                if _ADDRESS_IN_USE not in str(exc) or attempt == _RESTART_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)
            else:
                return

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing."""
        self._running().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._running().send_signal(signal.SIGCONT)

    def log_tail(self) -> str:
        return self._process.log_tail() if self._process is not None else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self) -> ManagedProcess:
        if self._process is None:
            raise NatsServerError("nats-server has not started yet")
        return self._process

    def _launch(self, port: int | None) -> None:
        argv = [str(self.binary), "-a", self.host, "-p", str(port if port is not None else -1)]
        argv += ["-js", "-sd", str(self.store_dir)]
        if self._config_file is not None:
            argv += ["-c", str(self._config_file)]
        argv += self._extra_args
        process = ManagedProcess(argv, log_path=self._log_path)
        process.start()
        try:
            self._port = process.wait_for(_ReadyParser(), self._start_timeout)
        except NatsServerError as exc:
            process.kill()
            raise NatsServerError(f"nats-server did not start: {exc}{process.log_tail()}") from exc
        except (ProcessExitedError, TimeoutError) as exc:
            process.kill()
            raise NatsServerError(f"nats-server did not start: {exc}") from exc
        self._process = process


class _ReadyParser:
    def __init__(self) -> None:
        self.port: int | None = None

    def __call__(self, line: str) -> int | None:
        if "[FTL]" in line:
            raise NatsServerError(line)
        listening = _LISTENING.search(line)
        if listening is not None:
            self.port = int(listening.group(1))
        if "Server is ready" in line:
            if self.port is None:
                raise NatsServerError("ready, but no client port was logged")
            return self.port
        return None
