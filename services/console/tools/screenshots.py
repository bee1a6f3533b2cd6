# ruff: noqa: INP001 - a tool run by hand beside the package, not a package itself
"""Screenshots of every console page, against a stack `./taskw up` started (on demand).

    python services/console/tools/screenshots.py --console-url URL --login operador \
        --password ... --nats-url nats://... --sim-url http://127.0.0.1:18099 \
        --webhook-url http://127.0.0.1:18080/webhooks/<secret> --out docs/console

It adds a few simulated instances (an incomplete session, a dropped one, a stalled one), sends
one message that fails, has the simulator post webhooks of several kinds to ingest (plus one
unreadable body), waits until ingest's read API counts them, then drives Debian's Chromium
through each page and saves PNGs.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import httpx
import nats
from nats.aio.client import Client
from playwright.async_api import Page, async_playwright
from pydantic import SecretStr

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.health import CheckNow, RegisterInstance
from zapgate.contracts.sending import SendMessage, TextContent
from zapgate.contracts.webhooks import CountWebhooks, WebhookCountsReply

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTANCES = (
    ("loja-centro", "Loja Centro", "5511900000011", True),
    ("loja-norte", "Loja Norte (sem número)", None, True),
    ("suporte", "Suporte", "5511900000013", False),
)


async def seed(nats_url: str, sim_url: str, webhook_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim", timeout=10) as sim:
        for instance_id, _name, phone, connected in INSTANCES:
            spec = {
                "instance_id": instance_id,
                "token": f"tok-{instance_id}",
                "phone": phone,
                "connected": connected,
                "restart_mode": "never",
                "webhook_url": webhook_url,
            }
            (await sim.post("/instances", json=spec)).raise_for_status()
        await post_webhooks(sim, webhook_url)
    nc = await nats.connect(nats_url)
    try:
        for instance_id, name, _phone, _connected in INSTANCES:
            command = RegisterInstance(
                instance_id=instance_id,
                display_name=name,
                token=SecretStr(f"tok-{instance_id}"),
                replace=True,
            )
            await nc.request(subjects.API_HEALTH_REGISTER, command.model_dump_json().encode(), 20)
            check = CheckNow(instance_id=instance_id).model_dump_json().encode()
            await nc.request(subjects.API_HEALTH_CHECK_NOW, check, 20)
        await SenderClient(nc).send(
            SendMessage(
                command_id=f"pedido-{uuid.uuid4().hex[:6]}",
                instance_id="loja-norte",
                phone="5511988887777",
                body=TextContent(message="Seu pedido saiu para entrega"),
            ),
            timeout=20,
        )
        await wait_counted(nc, WEBHOOKS_OF, len(TEXTS) + 2)
    finally:
        await nc.close()


WEBHOOKS_OF = "loja-norte"
TEXTS = ("Oi, meu pedido chegou?", "Qual o horário de vocês?", "Obrigada!")


async def post_webhooks(sim: httpx.AsyncClient, webhook_url: str) -> None:
    """Messages and a status through the simulator, and one unreadable body straight to ingest."""
    chat = "5511955554444"
    for text in TEXTS:
        answer = await sim.post(
            f"/instances/{WEBHOOKS_OF}/receive", json={"chat_id": chat, "text": text}
        )
        answer.raise_for_status()
    status = {"message_id": "3EB0SHOT0001", "status": "READ", "chat_id": chat}
    (await sim.post(f"/instances/{WEBHOOKS_OF}/status", json=status)).raise_for_status()
    cut = b'{"instanceId": "' + WEBHOOKS_OF.encode() + b'", "event": "webhookReceived", "msg'
    async with httpx.AsyncClient(timeout=10) as ingest:
        await ingest.post(webhook_url, content=cut, headers={"content-type": "application/json"})


async def wait_counted(nc: Client, instance_id: str, at_least: int) -> None:
    """Ask ingest's read API until the archive holds `at_least` webhooks (60 s at most)."""
    query = CountWebhooks(instance_id=instance_id).model_dump_json().encode()
    async with asyncio.timeout(60):
        while True:
            answer = await nc.request(subjects.API_INGEST_WEBHOOK_COUNTS, query, 10)
            reply = WebhookCountsReply.model_validate_json(answer.data)
            if sum(count.count for count in reply.counts) >= at_least:
                return
            await asyncio.sleep(0.5)


async def shoot(page: Page, url: str, path: Path) -> None:
    await page.goto(url)
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(path), full_page=True)
    print(f"saved {path}")  # noqa: T201 - a tool's report


async def main(args: argparse.Namespace) -> None:
    await seed(args.nats_url, args.sim_url, args.webhook_url)
    out = Path(args.out)
    base = args.console_url.rstrip("/")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        page = await browser.new_page(
            viewport={"width": 1440, "height": 900}, locale="pt-BR", timezone_id="America/Sao_Paulo"
        )
        await shoot(page, f"{base}/login", out / "login.png")
        await page.get_by_label("Usuário").fill(args.login)
        await page.get_by_label("Senha").fill(args.password)
        await page.get_by_role("button", name="Entrar").click()
        await page.wait_for_url(f"{base}/")
        await shoot(page, f"{base}/", out / "instances.png")
        await shoot(page, f"{base}/?estado=incompleta", out / "instances-filtered.png")
        await shoot(page, f"{base}/instancias/loja-norte", out / "instance.png")
        await shoot(page, f"{base}/instancias/suporte/reconectar", out / "reconnect.png")
        await shoot(page, f"{base}/instancias/nao-existe", out / "error-404.png")
        await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--console-url", required=True)
    parser.add_argument("--login", default="operador")
    parser.add_argument("--password", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--sim-url", required=True)
    parser.add_argument("--webhook-url", required=True, help="ingest's webhook URL (with secret)")
    parser.add_argument("--out", default="docs/console")
    arguments = parser.parse_args()
    Path(arguments.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(arguments))
