"""A child process whose merged output is drained by a thread, so it never blocks on a full pipe.

Servers are started in their own session (process group): a kill or pause reaches the server
and every child it forked (postgres backends), the way a machine crash would.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

T = TypeVar("T")

_HISTORY_LINES = 5000
_LOG_TAIL_LINES = 60


class ProcessExitedError(RuntimeError):
    """The process ended before the awaited output appeared."""


class ManagedProcess:
    """One run of a server command; start a new one for each (re)start."""

    def __init__(  # noqa: PLR0913 - keyword-only Popen options, each needed by a server
        self,
        argv: Sequence[str],
        *,
        user: int | None = None,
        group: int | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self._argv = [str(arg) for arg in argv]
        self._user = user
        self._group = group
        self._cwd = cwd
        self._env = dict(env) if env is not None else None
        self._log_path = log_path
        self._lines: deque[str] = deque(maxlen=_HISTORY_LINES)
        self._total = 0
        self._eof = False
        self._cond = threading.Condition()
        self._popen: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        return self._require().poll()

    def start(self) -> None:
        # S603: argv is built by our own code from a located binary, never from user input.
        self._popen = subprocess.Popen(  # noqa: S603
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
            user=self._user,
            group=self._group,
            cwd=self._cwd,
            env=self._env,
        )
        stream = self._popen.stdout
        if stream is None:  # pragma: no cover - stdout=PIPE always gives a stream
            raise RuntimeError("no output pipe")
        self._reader = threading.Thread(
            target=self._drain, args=(stream,), name=f"drain-{self._popen.pid}", daemon=True
        )
        self._reader.start()
        # A test run that dies without teardown must not leave servers behind.
        atexit.register(self.kill)

    def wait_for(self, match: Callable[[str], T | None], timeout: float) -> T:
        """Return the first non-None `match(line)` over the output so far and to come."""
        deadline = time.monotonic() + timeout
        cursor = 0
        with self._cond:
            while True:
                first = self._total - len(self._lines)
                cursor = max(cursor, first)
                while cursor < self._total:
                    found = match(self._lines[cursor - first])
                    cursor += 1
                    if found is not None:
                        return found
                if self._eof:
                    raise ProcessExitedError(f"process exited: {self.log_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout:.1f}s: {self.log_tail()}")
                self._cond.wait(remaining)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        with self._cond:
            tail = list(self._lines)[-lines:]
        return "\n" + "\n".join(tail)

    def send_signal(self, signum: signal.Signals) -> None:
        popen = self._require()
        if popen.poll() is None:
            # The whole group: a paused or killed server takes its children with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signum)

    def terminate(self, signum: signal.Signals, timeout: float) -> None:
        """Send `signum` and wait; SIGKILL the group if it does not exit in time."""
        popen = self._require()
        self.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.send_signal(signum)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._finish()

    def kill(self) -> None:
        popen = self._popen
        if popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        self._finish()

    def _finish(self) -> None:
        atexit.unregister(self.kill)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _require(self) -> subprocess.Popen[str]:
        if self._popen is None:
            raise RuntimeError("process not started")
        return self._popen

    def _drain(self, stream: IO[str]) -> None:
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            for line in stream:
                if log is not None:
                    log.write(line)
                    log.flush()
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._total += 1
                    self._cond.notify_all()
        finally:
            stream.close()
            if log is not None:
                log.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()
