"""The console over a real stack: nats-server, PostgreSQL, the W-API simulator over HTTP, health
and the console as processes (`zapgate-health run`, `zapgate-console run`), and Debian's
Chromium driven by Playwright (`executable_path`, never a downloaded browser).

Chromium must be installed (`./taskw test` installs it when running as root); a missing browser
fails these tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)
from pydantic import SecretStr

from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.contracts import subjects
from zapgate.contracts.health import CheckNow, CheckNowReply, RegisterInstance, RegistryReply
from zapgate.devservers.nats import NatsServer
from zapgate.devservers.postgres import free_port
from zapgate.devservers.postgres_for_tests import TestPostgres
from zapgate.devservers.pytest_plugin import reset_streams
from zapgate.localstack.processes import ProcessSpec, ServiceProcess
from zapgate.wapi.simulator.server import SimulatorServer

HOST = "127.0.0.1"
OPERATOR = "operadora"
PASSWORD = "senha-de-teste-7f3a"
CHROMIUM = "/usr/bin/chromium"
WEBHOOK_SECRET = "segredo-de-webhook-do-console-3b9d"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class ConsoleStack:
    """Ingest, health, the sender and the console as processes, and where to reach them
    (`webhook_url`: ingest's webhook endpoint, for the simulator)."""

    nats_url: str
    console_url: str
    logs: Path
    webhook_url: str = ""
    processes: list[ServiceProcess] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=10)

    def server_errors(self) -> list[str]:
        """Lines of the console's log that report a failed request (500s)."""
        text = (self.logs / "console.log").read_text(errors="replace")
        return [line for line in text.splitlines() if '"request_failed"' in line]


@pytest.fixture(scope="module")
def console_database(
    postgres_server: TestPostgres, migrated_template_database: str
) -> Iterator[str]:
    name = f"zg_console_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(name, template=migrated_template_database)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def console_stack(
    nats_server: NatsServer,
    console_database: str,
    wapi_simulator_server: SimulatorServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ConsoleStack]:
    """Ingest, health (1 s tick), the sender and the console, started once for the module on
    fresh streams."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, reset_streams(nats_server.url)).result(timeout=30)
    logs = tmp_path_factory.mktemp("console-stack")
    health_probe, sender_probe, console_port = free_port(HOST), free_port(HOST), free_port(HOST)
    ingest_probe, ingest_port = free_port(HOST), free_port(HOST)
    stack = ConsoleStack(
        nats_server.url,
        f"http://{HOST}:{console_port}",
        logs,
        webhook_url=f"http://{HOST}:{ingest_port}/webhooks/{WEBHOOK_SECRET}",
    )
    specs = [
        ProcessSpec(
            name="ingest",
            argv=("zapgate-ingest", "run"),
            env={
                "ZAPGATE_INGEST_ENVIRONMENT": "test",
                "ZAPGATE_INGEST_NATS_URL": nats_server.url,
                "ZAPGATE_INGEST_DATABASE_URL": console_database,
                "ZAPGATE_INGEST_WEBHOOK_SECRETS": WEBHOOK_SECRET,
                "ZAPGATE_INGEST_HTTP_HOST": HOST,
                "ZAPGATE_INGEST_HTTP_PORT": str(ingest_port),
                "ZAPGATE_INGEST_PROBE_HOST": HOST,
                "ZAPGATE_INGEST_PROBE_PORT": str(ingest_probe),
                "ZAPGATE_INGEST_SPOOL_DIR": str(logs / "ingest-spool"),
                "ZAPGATE_INGEST_ACCESS_LOG": "false",
                "ZAPGATE_INGEST_LOG_JSON": "true",
            },
            ready_url=f"http://{HOST}:{ingest_probe}/readyz",
            log_path=logs / "ingest.log",
        ),
        ProcessSpec(
            name="health",
            argv=("zapgate-health", "run"),
            env={
                "ZAPGATE_HEALTH_ENVIRONMENT": "test",
                "ZAPGATE_HEALTH_NATS_URL": nats_server.url,
                "ZAPGATE_HEALTH_DATABASE_URL": console_database,
                "ZAPGATE_HEALTH_WAPI_BASE_URL": wapi_simulator_server.base_url,
                "ZAPGATE_HEALTH_PROBE_HOST": HOST,
                "ZAPGATE_HEALTH_PROBE_PORT": str(health_probe),
                "ZAPGATE_HEALTH_TICK_INTERVAL": "PT1S",
                "ZAPGATE_HEALTH_RESTART_COOLDOWN": "PT120S",
                "ZAPGATE_HEALTH_LOG_JSON": "true",
            },
            ready_url=f"http://{HOST}:{health_probe}/readyz",
            log_path=logs / "health.log",
        ),
        ProcessSpec(
            name="sender",
            argv=("zapgate-sender", "run"),
            env={
                "ZAPGATE_SENDER_ENVIRONMENT": "test",
                "ZAPGATE_SENDER_NATS_URL": nats_server.url,
                "ZAPGATE_SENDER_DATABASE_URL": console_database,
                "ZAPGATE_SENDER_WAPI_BASE_URL": wapi_simulator_server.base_url,
                "ZAPGATE_SENDER_PROBE_HOST": HOST,
                "ZAPGATE_SENDER_PROBE_PORT": str(sender_probe),
                "ZAPGATE_SENDER_MIN_SEND_GAP": "PT0S",
                "ZAPGATE_SENDER_PROVIDER_BACKOFF": "PT0.05S",
                "ZAPGATE_SENDER_LOG_JSON": "true",
            },
            ready_url=f"http://{HOST}:{sender_probe}/readyz",
            log_path=logs / "sender.log",
        ),
        ProcessSpec(
            name="console",
            argv=("zapgate-console", "run"),
            env={
                "ZAPGATE_CONSOLE_ENVIRONMENT": "test",
                "ZAPGATE_CONSOLE_NATS_URL": nats_server.url,
                "ZAPGATE_CONSOLE_DATABASE_URL": console_database,
                "ZAPGATE_CONSOLE_HTTP_HOST": HOST,
                "ZAPGATE_CONSOLE_HTTP_PORT": str(console_port),
                "ZAPGATE_CONSOLE_SESSION_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
                "ZAPGATE_CONSOLE_OPERATORS": json.dumps(
                    {OPERATOR: Argon2Passwords().hash(PASSWORD)}
                ),
                "ZAPGATE_CONSOLE_COOKIE_SECURE": "false",
                "ZAPGATE_CONSOLE_LOG_JSON": "true",
            },
            ready_url=f"{stack.console_url}/readyz",
            log_path=logs / "console.log",
        ),
    ]
    try:
        # All at once, then wait for each: on a loaded machine one after the other would spend
        # the setup's time budget on imports.
        for spec in specs:
            process = ServiceProcess(spec, ready_timeout=100)
            stack.processes.append(process)
            process.start(wait_ready=False)
        with ThreadPoolExecutor(max_workers=len(stack.processes)) as waiters:
            for waited in [waiters.submit(p.wait_ready) for p in stack.processes]:
                waited.result()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def nc(console_stack: ConsoleStack) -> AsyncIterator[Client]:
    client = await nats.connect(console_stack.nats_url, connect_timeout=5)
    yield client
    await client.close()


async def check_now(nc: Client, instance_id: str) -> None:
    checked = await nc.request(
        subjects.API_HEALTH_CHECK_NOW,
        CheckNow(instance_id=instance_id).model_dump_json().encode(),
        timeout=20,
    )
    assert CheckNowReply.model_validate_json(checked.data).ok


async def register(nc: Client, instance_id: str, token: str) -> None:
    """Register an instance with health over its API and check it once."""
    command = RegisterInstance(
        instance_id=instance_id, display_name=instance_id, token=SecretStr(token), replace=True
    )
    answer = await nc.request(
        subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), timeout=20
    )
    assert RegistryReply.model_validate_json(answer.data).ok
    checked = await nc.request(
        subjects.API_HEALTH_CHECK_NOW,
        CheckNow(instance_id=instance_id).model_dump_json().encode(),
        timeout=20,
    )
    assert CheckNowReply.model_validate_json(checked.data).ok


@dataclass
class Browser:
    """One Chromium page plus every console error, page error and 5xx it saw."""

    page: Page
    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def watch(self) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text}")

        def on_response(response: Response) -> None:
            if response.status >= 500:
                self.errors.append(f"HTTP {response.status} {response.url}")

        def on_request(request: Request) -> None:
            self.requests.append(request.url)

        self.page.on("console", on_console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page: {error}"))
        self.page.on("response", on_response)
        self.page.on("request", on_request)


@pytest.fixture
async def browser(tmp_path: Path, console_stack: ConsoleStack) -> AsyncIterator[Browser]:
    """A fresh headless Chromium profile; the test fails on any browser or server error."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (./taskw test does)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            locale="pt-BR",
            timezone_id="America/Sao_Paulo",
            viewport={"width": 1400, "height": 900},
        )
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(20_000)
        watched = Browser(page=page, context=context)
        watched.watch()
        try:
            yield watched
        finally:
            await context.close()
    assert watched.errors == [], watched.errors
    assert console_stack.server_errors() == []


async def log_in(browser: Browser, console_url: str) -> None:
    page = browser.page
    await page.goto(f"{console_url}/login")
    await page.get_by_label("Usuário").fill(OPERATOR)
    await page.get_by_label("Senha").fill(PASSWORD)
    await page.get_by_role("button", name="Entrar").click()
    await page.wait_for_url(f"{console_url}/")
