"""A real `nats-server` (>= 2.14, JetStream on) as a local child process."""

from __future__ import annotations

import re
import signal
import socket
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
        extra_config: str = "",
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
        self._extra_config = extra_config
        if auth is not None or extra_config:
            if config_file is not None:
                raise NatsServerError("pass either auth/extra_config or config_file")
            # zapgate's users and permissions (nats_auth.py) plus the test harness user, then
            # `extra_config` (a cluster block, a server name).
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
        if self._config_file is not None and (self.auth is not None or self._extra_config):
            if self.auth is not None:
                self.auth.write_server_config(self._config_file)
            else:
                self._config_file.write_text("", encoding="utf-8")
            if self._extra_config:
                with self._config_file.open("a", encoding="utf-8") as config:
                    config.write("\n" + self._extra_config + "\n")
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

    def wait_for_log(self, pattern: re.Pattern[str], timeout: float) -> str:
        """Wait until the running process logs a line matching `pattern` (since its start)
        and return that line; `TimeoutError` past `timeout` s, `NatsServerError` if it exits."""
        try:
            return self._running().wait_for(
                lambda line: line if pattern.search(line) else None, timeout
            )
        except ProcessExitedError as exc:
            raise NatsServerError(f"nats-server exited: {exc}") from exc

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


_META_LEADER = re.compile(
    r"Self is new JetStream cluster metadata leader|JetStream cluster new metadata leader"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class NatsCluster:
    """`size` nats-servers from the same binary on loopback, routed into one JetStream cluster.

    Each node gets free client and route ports (kept across restarts, like `NatsServer`), a
    `server_name` (`<name>-<i>`, i from 1) and its own store dir under `root`; with `auth` every
    node has zapgate's users (routes are loopback only and unauthenticated). `start()` returns
    once every node has seen the JetStream meta leader, so R3 streams can be created at once.

    `urls` lists the client URLs (harness user with `auth`): pass `servers=cluster.urls` to
    `nats.connect`. A service needs only one (`url_of(i)`): it learns the other nodes from the
    server and logs in with its nkey on whichever it reconnects to.
    """

    def __init__(
        self,
        root: Path,
        *,
        size: int = 3,
        name: str = "zapgate",
        auth: DevCredentials | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise NatsServerError("a cluster needs at least one node")
        self.root = root
        self.name = name
        self.auth = auth
        self._start_timeout = start_timeout
        self._route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                root / f"{name}-{index + 1}" / "store",
                port=free_port(),
                auth=auth,
                extra_config=self._node_config(index),
                start_timeout=start_timeout,
            )
            for index in range(size)
        ]

    def _node_config(self, index: int) -> str:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{port}"'
            for other, port in enumerate(self._route_ports)
            if other != index
        )
        return (
            f'server_name: "{self.name}-{index + 1}"\n'
            f"cluster {{\n  name: {self.name}\n"
            f"  listen: 127.0.0.1:{self._route_ports[index]}\n  routes: [{routes}]\n}}\n"
        )

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (as the harness user with `auth`)."""
        return [node.url for node in self.nodes]

    def url_of(self, index: int) -> str:
        """Node `index`'s client URL (0-based)."""
        return self.nodes[index].url

    def start(self) -> Self:
        """Start every node, then wait until each one knows the JetStream meta leader."""
        for node in self.nodes:
            node.store_dir.parent.mkdir(parents=True, exist_ok=True)
            node.start()
        for node in self.nodes:
            self.wait_for_meta_leader(node)
        return self

    def wait_for_meta_leader(self, node: NatsServer) -> None:
        """Wait until `node` (since its last start) logged who the JetStream meta leader is."""
        try:
            node.wait_for_log(_META_LEADER, self._start_timeout)
        except TimeoutError as exc:
            raise NatsServerError(f"no JetStream meta leader: {exc}") from exc

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (0-based): a node lost without warning."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node `index` again (same ports and store) and wait until it rejoined."""
        node = self.nodes[index]
        node.restart()  # stops it first if it still runs; retries a lingering port
        self.wait_for_meta_leader(node)

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL what hangs)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
