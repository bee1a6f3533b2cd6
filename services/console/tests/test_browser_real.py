"""The console in headless Chromium over a real stack (health as a process, the simulator)."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from playwright.async_api import Dialog, expect

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.sending import SendMessage, SendStatus, TextContent
from zapgate.wapi.simulator import payloads
from zapgate.wapi.simulator.handle import Simulator
from zapgate.wapi.simulator.models import RestartMode
from zapgate.wapi.simulator.server import SimulatorServer

from .conftest import Browser, ConsoleStack, check_now, log_in, register

pytestmark = [pytest.mark.real, pytest.mark.slow]
SCAN_AFTER_S = 3.0
"""The simulated phone scans the QR (or enters the code) this long after it was served."""


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


async def test_restart_asks_for_confirmation_then_shows_the_cooldown(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """Reiniciar asks first; after it the page says when the next restart is allowed and the
    button waits for the cooldown."""
    simulator = wapi_simulator_server.simulator
    instance = unique("reinicio")
    simulator.add_instance(instance, "tok-restart", phone="5511900000003")
    await register(nc, instance, "tok-restart")
    await log_in(browser, console_stack.console_url)
    page = browser.page
    asked: list[str] = []

    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await page.goto(f"{console_stack.console_url}/instancias/{instance}")
    await page.get_by_role("button", name="Reiniciar", exact=True).click()

    await expect(page.locator(".flash.ok")).to_contain_text("Reinício pedido ao provedor.")
    await expect(page.locator(".flash.ok")).to_contain_text("Próximo reinício permitido")
    await expect(page.get_by_role("button", name="Reiniciar (aguarde")).to_be_disabled()
    assert len(asked) == 1
    assert "intervalo mínimo entre reinícios" in asked[0]
    restarts = [c for c in simulator.calls(instance_id=instance) if c.operation == "restart"]
    assert len(restarts) == 1
    await expect(page.locator("table.audit-log")).to_contain_text("Reiniciar")


async def drop(
    browser: Browser, console_stack: ConsoleStack, nc: Client, simulator: Simulator, name: str
) -> str:
    """A registered instance whose session dropped (and does not come back by itself)."""
    instance = unique(name)
    simulator.add_instance(
        instance, f"tok-{name}", phone="5511900000004", restart_mode=RestartMode.NEVER
    )
    await register(nc, instance, f"tok-{name}")
    simulator.set_connected(instance, connected=False)
    await log_in(browser, console_stack.console_url)
    state = browser.page.locator(f"#instancia-{instance} [data-testid=estado]")
    await expect(state).to_have_text("Desconectado", timeout=30_000)
    return instance


async def test_the_qr_flow_reconnects_a_dropped_instance(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """The reconnect page shows the provider's QR; the simulated phone scans it a few seconds
    after it was first served, and the open page watches the session come back: the QR block
    says so and the live card turns Conectado, with no hand of the test on the session."""
    simulator = wapi_simulator_server.simulator
    instance = await drop(browser, console_stack, nc, simulator, "qr")
    simulator.set_qr(instance, rotate_s=20, scan_after_s=SCAN_AFTER_S)
    page = browser.page
    await page.goto(f"{console_stack.console_url}/instancias/{instance}/reconectar")
    await expect(page.get_by_test_id("qr").locator("img")).to_have_attribute(
        "src", re.compile(r"^data:image/png;base64,")
    )
    await expect(page.get_by_test_id("ao-vivo")).to_have_text("ao vivo")
    state = page.locator(f"#instancia-{instance} [data-testid=estado]")
    await expect(state).to_have_text("Desconectado")  # the QR is up; nobody scanned it yet

    await expect(page.get_by_test_id("qr")).to_contain_text("Sessão conectada.", timeout=30_000)
    await expect(state).to_have_text("Conectado", timeout=20_000)
    assert any(c.operation == "qr-code" for c in simulator.calls(instance_id=instance))


async def test_the_pairing_code_flow_reconnects_a_dropped_instance(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """A phone number typed as people do gets a pairing code; the simulated phone enters it a
    few seconds after it was issued, and the open page sees the session come back."""
    simulator = wapi_simulator_server.simulator
    instance = await drop(browser, console_stack, nc, simulator, "pareamento")
    simulator.set_pairing(instance, enter_after_s=SCAN_AFTER_S)
    page = browser.page
    await page.goto(f"{console_stack.console_url}/instancias/{instance}/reconectar")
    await page.get_by_label("Celular do WhatsApp (com DDD)").fill("(11) 98888-7777")
    await page.get_by_role("button", name="Pedir código").click()
    await expect(page.get_by_test_id("codigo")).to_have_text(re.compile(r"\S+"))
    calls = [c for c in simulator.calls(instance_id=instance) if c.operation == "pairing-code"]
    assert [c.query.get("phoneNumber") for c in calls] == ["5511988887777"]

    await expect(page.get_by_test_id("sessao")).to_contain_text("Sessão conectada", timeout=30_000)
    state = page.locator(f"#instancia-{instance} [data-testid=estado]")
    await expect(state).to_have_text("Conectado", timeout=20_000)
    # The session came back with the number the code was asked for.
    await expect(page.locator(f"#instancia-{instance}")).to_contain_text("5511988887777")


async def test_tentar_novamente_on_a_failed_message_makes_a_new_attempt(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """A send refused while the session was incomplete is listed as failed with its reason;
    after the session is whole again, "Tentar novamente" sends it as a new attempt."""
    simulator = wapi_simulator_server.simulator
    instance = unique("falha")
    simulator.add_instance(instance, "tok-retry", phone=None, connected=True)
    await register(nc, instance, "tok-retry")
    failed = await SenderClient(nc).send(
        SendMessage(
            command_id=unique("pedido"),
            instance_id=instance,
            phone="5511988887777",
            body=TextContent(message="Seu pedido saiu para entrega"),
        ),
        timeout=20,
    )
    assert failed.status is SendStatus.FAILED
    simulator.set_phone(instance, "5511900000005")
    await check_now(nc, instance)

    await log_in(browser, console_stack.console_url)
    page = browser.page
    await page.goto(f"{console_stack.console_url}/instancias/{instance}")
    row = page.locator(f"tr[data-command='{failed.command_id}']").first
    await expect(row).to_contain_text("Sessão incompleta")
    await row.get_by_role("button", name="Tentar novamente").click()

    await expect(page.locator(".flash.ok")).to_contain_text("Nova tentativa")
    await expect(page.locator(".flash.ok")).to_contain_text("Aceita pelo provedor")
    sends = simulator.calls(operation="send-text", instance_id=instance)
    assert len(sends) == 1
    await expect(page.locator("table.audit-log")).to_contain_text("Tentar novamente (envio)")


async def test_the_instance_page_counts_the_webhooks_ingest_received_per_kind(
    browser: Browser,
    console_stack: ConsoleStack,
    nc: Client,
    wapi_simulator_server: SimulatorServer,
) -> None:
    """The simulator posts webhooks to ingest over HTTP; the instance page shows ingest's
    counts of the last hour per kind (the console asks ingest's API, never its tables)."""
    simulator = wapi_simulator_server.simulator
    instance = unique("webhooks")
    simulator.add_instance(instance, "tok-webhooks", phone="5511900000006")
    await register(nc, instance, "tok-webhooks")
    simulator.set_all_webhooks(instance, console_stack.webhook_url)
    # Ingest archives in stream order and publishes a proof of life for each message webhook
    # (they carry connectedPhone) right after its batch is stored: the proofs of the last two
    # say every webhook before them is archived too.
    proofs: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_proof(message: Msg) -> None:
        await proofs.put(message.data)

    subscription = await nc.subscribe(subjects.proof_of_life_subject(instance), cb=on_proof)
    chat = "5511955554444"
    posted = [
        await simulator.emit_status(instance, "3EB0CONSOLE1", "READ", chat_id=chat),
        await simulator.receive(instance, payloads.text_content("oi"), chat_id=chat),
        await simulator.receive(instance, payloads.text_content("tudo bem?"), chat_id=chat),
    ]
    assert [record.status_code for record in posted] == [200] * 3
    async with asyncio.timeout(30):
        for _ in posted[1:]:
            await proofs.get()
    await subscription.unsubscribe()

    await log_in(browser, console_stack.console_url)
    page = browser.page
    await page.goto(f"{console_stack.console_url}/instancias/{instance}")
    panel = page.get_by_test_id("webhooks-por-tipo")
    await expect(panel).to_contain_text("Webhooks por tipo (última hora)")
    received = panel.locator("tr[data-kind=message_received]")
    await expect(received.get_by_test_id("quantidade")).to_have_text("2")
    await expect(received).to_contain_text("Mensagem recebida")
    status = panel.locator("tr[data-kind=message_status]")
    await expect(status.get_by_test_id("quantidade")).to_have_text("1")
    await expect(status).to_contain_text("Encaminhado")
    await expect(panel.get_by_test_id("total")).to_have_text("3")
