"""The console in headless Chromium over a real stack (health as a process, the simulator)."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from playwright.async_api import expect

from zapgate.wapi.simulator.models import RestartMode
from zapgate.wapi.simulator.server import SimulatorServer

from .conftest import Browser, ConsoleStack, log_in, register

pytestmark = [pytest.mark.real, pytest.mark.slow]


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:6]}"


async def test_login_then_demo_reads_conectado_and_an_incomplete_session_its_reason(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """A logged-in operator sees a complete session as Conectado and a phoneless one as
    Sessão incompleta, with the reason in words."""
    simulator = wapi_simulator_server.simulator
    demo, incomplete = unique("demo"), unique("incompleta")
    simulator.add_instance(demo, "tok-demo", phone="5511900000001")
    simulator.add_instance(incomplete, "tok-inc", phone=None, connected=True)
    await register(nc, demo, "tok-demo")
    await register(nc, incomplete, "tok-inc")

    await log_in(browser, console_stack.console_url)
    page = browser.page
    await expect(page.locator(f"#instancia-{demo} [data-testid=estado]")).to_have_text("Conectado")
    row = page.locator(f"#instancia-{incomplete}")
    await expect(row.locator("[data-testid=estado]")).to_have_text("Sessão incompleta")
    await expect(row.locator("[data-testid=motivo]")).to_contain_text(
        "o número do WhatsApp não é conhecido"
    )
    # The login is in the audit table shown on the page.
    await expect(page.locator("table.audit-log")).to_contain_text("Entrou no console")


async def test_a_silent_drop_appears_live_without_a_new_request(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """The session drops with no webhook; health's tick sees it and the open page shows
    Desconectado through the event stream alone: no reload, no other request."""
    simulator = wapi_simulator_server.simulator
    dropped = unique("queda")
    simulator.add_instance(
        dropped, "tok-drop", phone="5511900000002", restart_mode=RestartMode.NEVER
    )
    await register(nc, dropped, "tok-drop")

    await log_in(browser, console_stack.console_url)
    page = browser.page
    state = page.locator(f"#instancia-{dropped} [data-testid=estado]")
    await expect(state).to_have_text("Conectado")
    await expect(page.get_by_test_id("ao-vivo").first).to_have_text("ao vivo")
    seen_before = len(browser.requests)
    page_loads: list[str] = []
    page.on("framenavigated", lambda frame: page_loads.append(frame.url))

    simulator.set_connected(dropped, connected=False)

    await expect(state).to_have_text("Desconectado", timeout=30_000)
    later = browser.requests[seen_before:]
    assert all(url.endswith("/eventos") for url in later), later
    assert page_loads == []
