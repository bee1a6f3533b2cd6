"""A minimal launcher for the real service processes the benchmarks and the soak drive.

No shared process launcher (`zapgate.localstack.processes`) existed when this was written, so
this module starts each service through its console script with `ZAPGATE_<SVC>_*` settings,
waits for its `/readyz` (or any HTTP answer for plain servers), samples its RSS and stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import httpx

from zapgate.devservers import NatsServer
from zapgate.devservers.postgres import free_port
from zapgate.devservers.postgres_for_tests import postgres_for_tests
from zapgate.runtime.db import migrate_all

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
BENCH_SECRET = "bench-path-secret-4d9e1f"  # noqa: S105 - a path secret used only by benchmarks
READY_TIMEOUT = 180.0  # a loaded 2-core machine takes minutes to start a service


class ProcessFailedError(RuntimeError):
    """A benchmark process exited or never became ready."""


class ServiceProcess:
    """One child process with its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = log_dir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._running().pid

    def start(self) -> Self:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark itself
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def rss_mib(self) -> float:
        """Resident memory of the process (Linux `/proc`; no psutil types in the workspace)."""
        return rss_mib(self.pid)

    def wait_ready(self, url: str, *, any_status: bool = False) -> None:
        """Poll `url` until it answers 200 (or anything, with `any_status`)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessFailedError(f"{self.name} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(url, timeout=2.0)
                if any_status or answer.status_code == httpx.codes.OK:
                    return
            # A separate process exposes readiness only over HTTP; ask again shortly.
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()  # never leave a process behind that nobody will stop
        raise ProcessFailedError(f"{self.name} not ready at {url}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise ProcessFailedError(f"{self.name} was not started")
        return self._process


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Infra:
    """A real nats-server and a freshly migrated PostgreSQL database."""

    nats: NatsServer
    database_url: str
    workdir: Path

    @property
    def nats_url(self) -> str:
        return self.nats.url


@contextlib.contextmanager
def infra(workdir: Path) -> Iterator[Infra]:
    """nats-server 2.x from the wheel and an embedded PostgreSQL (fsync off), torn down after."""
    nats = NatsServer(workdir / "nats", log_path=workdir / "nats.log").start()
    postgres = postgres_for_tests(workdir / "pg", use_docker=False)
    name = f"zg_bench_{uuid.uuid4().hex[:8]}"
    try:
        postgres.create_database(name)
        url = postgres.url(name)
        migrate_all(url)
        yield Infra(nats, url, workdir)
    finally:
        with contextlib.suppress(Exception):
            postgres.drop_database(name)
        postgres.close()
        nats.stop()


def _common_env(prefix: str, infra: Infra, probe_port: int) -> dict[str, str]:
    return {
        f"{prefix}NATS_URL": infra.nats_url,
        f"{prefix}DATABASE_URL": infra.database_url,
        f"{prefix}PROBE_HOST": "127.0.0.1",
        f"{prefix}PROBE_PORT": str(probe_port),
        f"{prefix}LOG_JSON": "true",
        f"{prefix}ENVIRONMENT": "dev",
    }


def start_ingest(infra: Infra, log_dir: Path, *, http_port: int) -> ServiceProcess:
    """`zapgate-ingest run` (uvicorn with uvloop + httptools, archiver on), ready on /readyz."""
    prefix = "ZAPGATE_INGEST_"
    probe_port = free_port()
    env = _common_env(prefix, infra, probe_port) | {
        f"{prefix}WEBHOOK_SECRETS": BENCH_SECRET,
        f"{prefix}HTTP_HOST": "127.0.0.1",
        f"{prefix}HTTP_PORT": str(http_port),
        f"{prefix}SPOOL_DIR": str(infra.workdir / f"spool-{http_port}"),
    }
    process = ServiceProcess("ingest", [str(BIN / "zapgate-ingest"), "run"], log_dir, env)
    process.start().wait_ready(f"http://127.0.0.1:{probe_port}/readyz")
    return process


def start_sender(infra: Infra, log_dir: Path, *, wapi_base_url: str) -> ServiceProcess:
    """`zapgate-sender run` with no per-instance gap (throughput), ready on /readyz."""
    prefix = "ZAPGATE_SENDER_"
    probe_port = free_port()
    env = _common_env(prefix, infra, probe_port) | {
        f"{prefix}WAPI_BASE_URL": wapi_base_url,
        f"{prefix}MIN_SEND_GAP": "PT0S",
    }
    process = ServiceProcess("sender", [str(BIN / "zapgate-sender"), "run"], log_dir, env)
    process.start().wait_ready(f"http://127.0.0.1:{probe_port}/readyz")
    return process


def start_simulator(
    log_dir: Path, instances: Sequence[tuple[str, str, str]]
) -> tuple[ServiceProcess, str]:
    """`zapgate-wapi-sim` with `(id, token, phone)` instances; returns it and its root URL."""
    port = free_port()
    argv = [str(BIN / "zapgate-wapi-sim"), "--port", str(port)]
    for instance_id, token, phone in instances:
        argv += ["--instance", f"{instance_id}:{token}:{phone}"]
    process = ServiceProcess("simulator", argv, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(url + "/", any_status=True)
    return process, url
