"""The archiver as a child process of `zapgate-ingest run`, and the child's side of the deal.

Archiving (decode, one transaction per batch, proofs of life) is CPU work that, on the gateway's
event loop, stalls the webhook route for the length of a batch. `zapgate-ingest run` therefore
starts `zapgate-ingest archive` as a child (`ArchiverChild`, with `archiver_process`, the
default): own interpreter, own loop, own core when there is one. The webhook's promises do not
depend on it: a 2xx means the event is in JetStream (or the spool), and the archiver's durable
consumer takes it from there whenever a child runs.

The child lives and dies with its parent: its stdin is a pipe from the parent that nobody writes
to; end of file there (the parent exited, even by SIGKILL) stops the child like SIGTERM does.
A child that exits while the gateway runs is started again after `RESTART_DELAY`, each exit
logged (`archiver_process_exited`). No supervision library is used: what is needed is this
coupling of one child to its parent's lifetime, which process managers (supervisord, circus)
do not offer from inside the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = structlog.get_logger("zapgate.ingest.archiver_process")
RESTART_DELAY: Final = 1.0  # seconds between a child's exit and the next start
STOP_GRACE: Final = 15.0  # seconds a child gets to finish its batch after SIGTERM


def free_port(host: str) -> int:
    """A TCP port free on `host` now (the kernel's pick for port 0), for the child's probes.

    The port is released before the child binds it; another process could take it in between
    (the child then exits on the bind error and is started again on the same port).
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_for(host: str) -> str:
    """The address the parent reaches a server bound to `host` at: loopback for a wildcard
    (`0.0.0.0`, `::`, as in containers), else `host` itself (bracketed for IPv6 in a URL)."""
    if host in {"0.0.0.0", ""}:  # noqa: S104 - compared, not bound
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def archiver_argv() -> list[str]:
    """The child's command line: this interpreter, `zapgate.ingest.cli archive`."""
    return [sys.executable, "-m", "zapgate.ingest.cli", "archive", "--with-parent"]


class ArchiverChild:
    """Keeps one archiver child running beside the gateway (a thread watches it).

    ```python
    child = ArchiverChild(archiver_argv())
    child.start()
    ...            # the gateway serves
    child.stop()   # SIGTERM, wait up to STOP_GRACE, then SIGKILL
    ```
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child and the thread that restarts it when it exits."""
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="archiver-child", daemon=True)
        self._watcher.start()

    def stop(self) -> int | None:
        """Stop the child (SIGTERM, SIGKILL after `STOP_GRACE`); its exit code."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _close(process.stdin)
        if self._watcher is not None:
            self._watcher.join(STOP_GRACE)
        return process.returncode

    def _spawn(self) -> None:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self._argv, env=self._env, stdin=subprocess.PIPE
        )
        with self._lock:
            self._process = process
        self.starts += 1
        log.info("archiver_process_started", pid=process.pid, starts=self.starts)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is None:
                return
            code = process.wait()
            _close(process.stdin)
            if self._stopping.is_set():
                return
            log.error(
                "archiver_process_exited",
                pid=process.pid,
                exit_code=code,
                reason="the archiver child ended while the gateway runs: started again",
            )
            if self._stopping.wait(RESTART_DELAY):
                return
            self._spawn()


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()


def stop_on_signals(stop: asyncio.Event, *, with_parent: bool) -> None:
    """Set `stop` on SIGTERM/SIGINT and, `with_parent`, when stdin (the parent's pipe) ends."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not with_parent:
        return

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass  # nobody writes; only the end of file matters
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="parent-watch", daemon=True).start()
