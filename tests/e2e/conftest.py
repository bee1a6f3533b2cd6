"""The three services as real processes (`zapgate-<svc> run`) over real servers.

`Stack` starts ingest, health and sender through their console scripts with the launcher from
`zapgate.localstack.processes`, pointed at the session's nats-server, a migrated database and
the W-API simulator over HTTP. Flow tests share one stack per module (short tick, cooldown and
stuck windows set through the environment); fault tests start their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nats
import pytest
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.health import CheckNow, CheckNowReply, RegisterInstance, RegistryReply
from zapgate.devservers.postgres import free_port
from zapgate.devservers.pytest_plugin import reset_streams
from zapgate.localstack.processes import ProcessSpec, ServiceProcess
from zapgate.testkit.ingest import stream_messages

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from zapgate.devservers.nats import NatsServer
    from zapgate.devservers.postgres_for_tests import TestPostgres
    from zapgate.wapi.simulator.server import SimulatorServer

SECRET = "e2e-webhook-secret-5d1c9a"
HOST = "127.0.0.1"
# Interval of the bounded polls (database rows, stream counts) that have no event to wait on.
POLL_S = 0.1
# Short windows so every flow finishes in seconds; the cooldown is long enough that several
# ticks fall inside it.
FLOW_ENV: dict[str, dict[str, str]] = {
    "health": {
        "ZAPGATE_HEALTH_TICK_INTERVAL": "PT1S",
        "ZAPGATE_HEALTH_RESTART_COOLDOWN": "PT120S",
        "ZAPGATE_HEALTH_PHONE_MAX_AGE": "PT1H",
        # Episodes settle and suspicions are confirmed quickly, so flows end in seconds.
        "ZAPGATE_HEALTH_SETTLE_WINDOW": "PT1S",
        "ZAPGATE_HEALTH_CONFIRM_DELAY": "PT0.5S",
    },
    "sender": {
        "ZAPGATE_SENDER_STUCK_WINDOW": "PT2S",
        "ZAPGATE_SENDER_SWEEP_EVERY": "PT1S",
        "ZAPGATE_SENDER_STALL_THRESHOLD": "3",
        "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
        "ZAPGATE_SENDER_PROVIDER_BACKOFF": "PT0.05S",
    },
    "ingest": {},
}


@dataclass
class Stack:
    """Running service processes and where to reach them."""

    nats_url: str
    database_url: str
    wapi_base_url: str
    logs: Path
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    ingest_port: int = 0

    @property
    def webhook_url(self) -> str:
        return f"http://{HOST}:{self.ingest_port}/webhooks/{SECRET}"

    def spec(self, name: str, replica: str = "") -> ProcessSpec:
        prefix = f"ZAPGATE_{name.upper()}_"
        probe = free_port(HOST)
        env = {
            f"{prefix}ENVIRONMENT": "test",
            f"{prefix}NATS_URL": self.nats_url,
            f"{prefix}DATABASE_URL": self.database_url,
            f"{prefix}PROBE_HOST": HOST,
            f"{prefix}PROBE_PORT": str(probe),
            f"{prefix}LOG_JSON": "true",
        }
        if name == "ingest":
            env |= {
                "ZAPGATE_INGEST_WEBHOOK_SECRETS": SECRET,
                "ZAPGATE_INGEST_HTTP_HOST": HOST,
                "ZAPGATE_INGEST_HTTP_PORT": str(self.ingest_port),
                "ZAPGATE_INGEST_SPOOL_DIR": str(self.logs / f"spool{replica}"),
                "ZAPGATE_INGEST_ACCESS_LOG": "false",
                "ZAPGATE_INGEST_ARCHIVER_ACK_WAIT": "PT3S",
                "ZAPGATE_INGEST_ARCHIVER_RETRY_DELAY": "PT0.2S",
            }
        else:
            env[f"{prefix}WAPI_BASE_URL"] = self.wapi_base_url
        env |= self.env.get(name, {})
        if replica:
            env |= self.env.get(f"{name}{replica}", {})  # one replica's own settings
        return ProcessSpec(
            name=f"{name}{replica}",
            argv=(f"zapgate-{name}", "run"),
            env=env,
            ready_url=f"http://{HOST}:{probe}/readyz",
            log_path=self.logs / f"{name}{replica}.log",
        )

    def start(self, *names: str) -> None:
        """Start the named services at once and wait until each one is ready."""
        if self.ingest_port == 0:
            self.ingest_port = free_port(HOST)
        started = []
        for name in names:
            service, replica = name.rstrip("0123456789"), name.lstrip("abcdefghijklmnopqrstuvwxyz")
            process = ServiceProcess(self.spec(service, replica), ready_timeout=90)
            self.processes[name] = process
            started.append(process.start(wait_ready=False))
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            for future in [pool.submit(process.wait_ready) for process in started]:
                future.result()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop(grace=10)


def make_stack(
    nats_url: str, database_url: str, wapi_base_url: str, logs: Path, **env: dict[str, str]
) -> Stack:
    logs.mkdir(parents=True, exist_ok=True)
    return Stack(nats_url, database_url, wapi_base_url, logs, env=env)


@pytest.fixture
def start_stack(
    nats_url: str, database_url: str, wapi_simulator_server: SimulatorServer, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    """Start services as processes on the test's servers and database; all stopped afterwards."""
    stacks: list[Stack] = []

    def start(*names: str, **env: dict[str, str]) -> Stack:
        logs = tmp_path / f"logs{len(stacks) or ''}"
        stack = make_stack(nats_url, database_url, wapi_simulator_server.base_url, logs, **env)
        stacks.append(stack)
        stack.start(*names)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def module_database(
    postgres_server: TestPostgres, migrated_template_database: str
) -> Iterator[str]:
    """A fresh migrated database shared by one module's flows (each uses its own instances)."""
    name = f"zg_e2e_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(name, template=migrated_template_database)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def flow_stack(
    nats_server: NatsServer,
    module_database: str,
    wapi_simulator_server: SimulatorServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Ingest, health and sender, started once for the module on fresh streams."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, reset_streams(nats_server.url)).result(timeout=30)
    stack = make_stack(
        nats_server.url,
        module_database,
        wapi_simulator_server.base_url,
        tmp_path_factory.mktemp("e2e-flows"),
        **FLOW_ENV,
    )
    try:
        stack.start("ingest", "health", "sender")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, connect_timeout=5)
    yield nc
    await nc.close()


async def register(
    nc: Client, instance_id: str, token: str, *, managed: bool = True
) -> RegistryReply:
    """Register an instance with health over its API, as an operator would."""
    command = RegisterInstance(
        instance_id=instance_id,
        display_name=instance_id,
        token=SecretStr(token),
        managed=managed,
        replace=True,
    )
    answer = await nc.request(
        subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), timeout=20
    )
    reply = RegistryReply.model_validate_json(answer.data)
    assert reply.ok, reply
    return reply


async def check_now(nc: Client, instance_id: str) -> CheckNowReply:
    answer = await nc.request(
        subjects.API_HEALTH_CHECK_NOW,
        CheckNow(instance_id=instance_id).model_dump_json().encode(),
        timeout=20,
    )
    return CheckNowReply.model_validate_json(answer.data)


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def wait_until(probe: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Poll `probe` until it holds: a bounded poll where no event exists (rows, counts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await probe():
        if loop.time() >= deadline:
            raise TimeoutError(f"after {timeout}s still not: {what}")
        await asyncio.sleep(POLL_S)


async def read_stream(nc: Client, stream: str, subject: str) -> list[Msg]:
    """Every message `stream` holds now on `subject` (the testkit's one reader)."""
    return await stream_messages(nc, subject, stream=stream)


def repeated(values: list[str]) -> dict[str, int]:
    """The values seen more than once, with their counts (empty: nothing twice)."""
    return {value: count for value, count in Counter(values).items() if count > 1}
