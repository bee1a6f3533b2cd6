"""The console's pages and actions over fakes: login, CSRF, pt-BR pages, audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from zapgate.console.adapters.passwords import Argon2Passwords
from zapgate.console.app import Ports, create_app
from zapgate.console.settings import ConsoleSettings
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import (
    EvidenceSource,
    InstanceHealth,
    InstanceState,
    InstanceStateChanged,
)
from zapgate.contracts.sending import MessageKind, SendStatus, SendSummary
from zapgate.contracts.webhooks import WebhookCount, WebhookDisposition
from zapgate.runtime.clock import ManualClock

from .fakes import FakeAudit, FakeFeed, FakeHealth, FakeIngest, FakeSender

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return Argon2Passwords().hash(PASSWORD)


@pytest.fixture
def health() -> FakeHealth:
    fake = FakeHealth()
    fake.put(
        InstanceHealth(
            instance_id="demo",
            display_name="Demo",
            managed=True,
            paused=False,
            state=InstanceState.CONNECTED,
            phone="5511900000001",
            since=NOW - timedelta(minutes=5),
            last_check_at=NOW - timedelta(seconds=30),
        )
    )
    fake.put(
        InstanceHealth(
            instance_id="loja",
            display_name="Loja",
            managed=True,
            paused=False,
            state=InstanceState.DEGRADED,
            reason="SESSION_INCOMPLETE",
            since=NOW - timedelta(hours=2),
        )
    )
    return fake


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def sender() -> FakeSender:
    failed = SendSummary(
        command_id="pedido-42",
        instance_id="loja",
        phone="5511988887777",
        kind=MessageKind.TEXT,
        status=SendStatus.FAILED,
        error=Problem.of(ErrorCode.SESSION_INCOMPLETE),
        created_at=NOW - timedelta(minutes=3),
        failed_at=NOW - timedelta(minutes=3),
    )
    stuck = SendSummary(
        command_id="pedido-41",
        instance_id="loja",
        phone="5511988887777",
        kind=MessageKind.TEXT,
        status=SendStatus.SENT,
        created_at=NOW - timedelta(minutes=30),
        sent_at=NOW - timedelta(minutes=30),
    )
    return FakeSender(by_instance={"loja": [failed, stuck]}, stuck={"loja": [stuck]})


@pytest.fixture
def ingest() -> FakeIngest:
    return FakeIngest(
        counts={
            "loja": [
                WebhookCount(
                    kind="message_received",
                    disposition=WebhookDisposition.ROUTED,
                    count=41,
                    last_received_at=NOW - timedelta(minutes=2),
                ),
                WebhookCount(
                    kind="quarantined",
                    disposition=WebhookDisposition.QUARANTINED,
                    code="WEBHOOK_NOT_JSON",
                    count=2,
                    last_received_at=NOW - timedelta(minutes=40),
                ),
                WebhookCount(
                    kind="unrouted",
                    disposition=WebhookDisposition.UNROUTED,
                    count=1,
                    last_received_at=NOW - timedelta(minutes=7),
                ),
            ]
        }
    )


@pytest.fixture
def client(
    health: FakeHealth,
    sender: FakeSender,
    audit: FakeAudit,
    ingest: FakeIngest,
    password_hash: str,
) -> Iterator[TestClient]:
    settings = ConsoleSettings(
        environment="test",
        database_url=SecretStr("postgresql://zapgate@127.0.0.1/unused"),
        session_secret=SecretStr("s" * 40),
        operators={"ana": SecretStr(password_hash)},
        cookie_secure=False,
    )
    app = create_app(
        settings,
        clock=ManualClock(NOW),
        ports=Ports(health=health, sender=sender, audit=audit, feed=FakeFeed(), ingest=ingest),
        configure_logs=False,
    )
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "page has no csrf field"
    return found.group(1)


def log_in(client: TestClient) -> str:
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"login": "ana", "password": PASSWORD, "csrf": token})
    assert answer.status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    return csrf_of(page.text)


def test_pages_need_a_login(client: TestClient) -> None:
    """Without a session the instances page sends the operator to the login page."""
    answer = client.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"


def test_a_wrong_password_is_refused_in_portuguese_and_audited(
    client: TestClient, audit: FakeAudit
) -> None:
    """401 with a pt-BR message; the failed attempt is in the audit log."""
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"login": "ana", "password": "nope", "csrf": token})
    assert answer.status_code == 401
    assert "Usuário ou senha incorretos." in answer.text
    assert [(e.operator, e.action, e.outcome) for e in audit.entries] == [
        ("ana", "login", "failed")
    ]


def test_an_unknown_operator_is_refused_like_a_wrong_password(client: TestClient) -> None:
    """Same answer whether the login exists or not."""
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"login": "eve", "password": PASSWORD, "csrf": token})
    assert answer.status_code == 401


def test_login_without_the_csrf_token_is_refused(client: TestClient) -> None:
    """Even the login form must echo the token (login CSRF)."""
    client.get("/login")
    answer = client.post("/login", data={"login": "ana", "password": PASSWORD})
    assert answer.status_code == 403
    assert "Ação recusada" in answer.text


def test_the_session_cookie_is_http_only_and_strict(client: TestClient) -> None:
    """The cookie cannot be read by scripts nor sent by other sites."""
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"login": "ana", "password": PASSWORD, "csrf": token})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


def test_instances_page_shows_each_state_in_portuguese(client: TestClient) -> None:
    """`demo` reads Conectado; the incomplete session reads Sessão incompleta with its reason."""
    log_in(client)
    page = client.get("/").text
    assert "Conectado" in page
    assert "Sessão incompleta" in page
    assert "o número do WhatsApp não é conhecido" in page
    assert "há 5 minutos" in page


def test_the_state_filter_shows_only_that_state(client: TestClient) -> None:
    """?estado=incompleta lists the incomplete session and not the connected one."""
    log_in(client)
    page = client.get("/?estado=incompleta").text
    assert 'id="instancia-loja"' in page
    assert 'id="instancia-demo"' not in page


def test_an_action_without_the_csrf_token_is_refused(
    client: TestClient, health: FakeHealth
) -> None:
    """A forged POST changes nothing."""
    log_in(client)
    answer = client.post("/instancias/demo/pausar", data={})
    assert answer.status_code == 403
    assert ("pause", "demo") not in health.calls


def test_a_cross_origin_action_is_refused_even_with_the_token(
    client: TestClient, health: FakeHealth
) -> None:
    """An Origin other than the console's own is refused outright."""
    token = log_in(client)
    answer = client.post(
        "/instancias/demo/pausar",
        data={"csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert answer.status_code == 403
    assert ("pause", "demo") not in health.calls


def test_pause_goes_through_health_and_is_audited(
    client: TestClient, health: FakeHealth, audit: FakeAudit
) -> None:
    """The action reaches health's API and the audit shows who did what."""
    token = log_in(client)
    answer = client.post("/instancias/demo/pausar", data={"csrf": token})
    assert answer.status_code == 303
    assert ("pause", "demo") in health.calls
    assert (audit.entries[-1].operator, audit.entries[-1].action) == ("ana", "pause")
    page = client.get("/instancias/demo").text
    assert "Instância pausada." in page
    assert "Pausado" in page
    assert "ana" in page


def test_an_unknown_instance_page_is_a_portuguese_404(client: TestClient) -> None:
    """404 in words, not a stack trace."""
    log_in(client)
    answer = client.get("/instancias/nao-existe")
    assert answer.status_code == 404
    assert "Página não encontrada" in answer.text


def test_register_refused_by_health_shows_its_message(client: TestClient) -> None:
    """A duplicate id comes back with health's pt-BR message."""
    token = log_in(client)
    client.post(
        "/instancias",
        data={"csrf": token, "instance_id": "demo", "display_name": "x", "token": "t"},
    )
    assert "Já existe uma instância" in client.get("/").text


def test_restart_inside_the_cooldown_says_until_when(
    client: TestClient, health: FakeHealth, audit: FakeAudit
) -> None:
    """Health refuses by its cooldown; the page says when the next restart is allowed."""
    health.restart_refused_until = NOW + timedelta(minutes=12)
    token = log_in(client)
    client.post("/instancias/demo/reiniciar", data={"csrf": token})
    page = client.get("/instancias/demo").text
    assert "Reinício não feito: reinício recente." in page
    assert "em 12 minutos" in page
    assert (audit.entries[-1].action, audit.entries[-1].outcome) == ("restart", "failed")


def test_after_a_restart_the_button_waits_for_the_cooldown_health_reports(
    client: TestClient, health: FakeHealth
) -> None:
    """The time left comes from health's read API (restart_cooldown_until), not a setting of
    the console: 30 minutes by health's answer, shown on the disabled button."""
    health.restarted_at = NOW
    token = log_in(client)
    client.post("/instancias/demo/reiniciar", data={"csrf": token})
    page = client.get("/instancias/demo").text
    assert "Reiniciar (aguarde 30 minutos)" in page
    health.put(
        health.instances["demo"].model_copy(
            update={"restart_cooldown_until": NOW + timedelta(minutes=4)}
        )
    )
    assert "Reiniciar (aguarde 4 minutos)" in client.get("/instancias/demo").text
    assert "próximo em 4 minutos" in client.get("/").text


def test_restart_accepted_is_audited_as_ok(
    client: TestClient, health: FakeHealth, audit: FakeAudit
) -> None:
    """The restart goes through health's API and lands in the audit log."""
    token = log_in(client)
    client.post("/instancias/demo/reiniciar", data={"csrf": token})
    assert ("restart", "demo") in health.calls
    assert (audit.entries[-1].action, audit.entries[-1].outcome) == ("restart", "ok")


def test_reconnect_page_shows_the_qr_of_a_dropped_session(
    client: TestClient, health: FakeHealth
) -> None:
    """A disconnected instance gets the provider's QR image, refreshed by htmx."""
    health.put(health.instances["demo"].model_copy(update={"state": InstanceState.DISCONNECTED}))
    log_in(client)
    page = client.get("/instancias/demo/reconectar").text
    assert 'src="data:image/png;base64,' in page
    assert 'hx-trigger="every 5s"' in page


def test_a_pairing_code_is_asked_for_a_valid_phone_only(
    client: TestClient, health: FakeHealth
) -> None:
    """A typed Brazilian number reaches health as digits with the country code; junk does not."""
    token = log_in(client)
    bad = client.post("/instancias/demo/pareamento", data={"csrf": token, "phone": "123"})
    assert bad.status_code == 422
    assert "Número inválido" in bad.text
    good = client.post(
        "/instancias/demo/pareamento", data={"csrf": token, "phone": "(11) 98888-7777"}
    )
    assert good.status_code == 200
    assert "K7QZ-4M2P" in good.text
    assert ("pairing_code", "demo:5511988887777") in health.calls


def test_the_instance_page_shows_the_timeline_in_words(
    client: TestClient, health: FakeHealth
) -> None:
    """Each state change reads as labels, reason and the evidence that caused it."""
    health.transitions["loja"] = [
        InstanceStateChanged(
            instance_id="loja",
            from_state=InstanceState.CONNECTED,
            to_state=InstanceState.DEGRADED,
            reason="SESSION_INCOMPLETE",
            source=EvidenceSource.TICK,
            observed_at=NOW - timedelta(hours=2),
        )
    ]
    log_in(client)
    page = client.get("/instancias/loja").text
    assert "Linha do tempo" in page
    assert "verificação periódica" in page
    assert page.count("Sessão incompleta") >= 2


def test_failed_and_stuck_messages_are_listed_with_their_timelines(client: TestClient) -> None:
    """The failed send shows its pt-BR error and a retry button; the stuck one is listed and
    counted on the instances page."""
    log_in(client)
    page = client.get("/instancias/loja").text
    assert "Com falha (1)" in page
    assert "Presas (1)" in page
    assert "Sessão incompleta: a instância diz estar conectada" in page
    assert "Tentar novamente" in page
    assert "Aceita pelo provedor" in page
    row = client.get("/").text.split('id="instancia-loja"')[1].split("</tr>")[0]
    assert '<td class="num">1</td>' in row


def test_tentar_novamente_makes_a_new_attempt_through_the_sender(
    client: TestClient, sender: FakeSender, audit: FakeAudit
) -> None:
    """The retry goes to the sender's API with a new command id and is audited."""
    token = log_in(client)
    client.post("/instancias/loja/envios/pedido-42/tentar-novamente", data={"csrf": token})
    assert [original for original, _ in sender.retried] == ["pedido-42"]
    assert sender.retried[0][1].startswith("pedido-42:r")
    assert (audit.entries[-1].action, audit.entries[-1].detail) == ("retry_send", "pedido-42")
    assert "Nova tentativa" in client.get("/instancias/loja").text


def test_a_silent_sender_leaves_the_pages_up_with_a_message(
    client: TestClient, sender: FakeSender
) -> None:
    """When the sender does not answer, the instance page says so in words; counts show —."""
    sender.available = False
    log_in(client)
    page = client.get("/instancias/loja")
    assert page.status_code == 200
    assert "O serviço de envio não respondeu a tempo." in page.text


def test_an_open_outage_episode_with_flaps_reads_instavel(
    client: TestClient, health: FakeHealth
) -> None:
    """Health's read model carries the episode's flaps: the card says Instável and why."""
    health.put(
        health.instances["demo"].model_copy(
            update={
                "state": InstanceState.CONNECTED,
                "outage_started_at": NOW - timedelta(minutes=20),
                "episode_flaps": 3,
                "phone_observed_at": NOW - timedelta(minutes=1),
            }
        )
    )
    log_in(client)
    row = client.get("/").text.split('id="instancia-demo"')[1].split("</tr>")[0]
    assert "Instável" in row
    assert "3 mudança(s) de estado" in row
    assert "há 1 minuto" in row


def test_the_instance_page_counts_webhooks_per_kind_of_the_last_hour(
    client: TestClient, ingest: FakeIngest
) -> None:
    """Ingest's counts per kind and disposition, in words, with the total."""
    log_in(client)
    page = client.get("/instancias/loja").text
    panel = page.split('data-testid="webhooks-por-tipo"')[1].split("</section>")[0]
    assert "Webhooks por tipo (última hora)" in panel
    assert ingest.asked == ["loja"]
    rows = re.findall(
        r"<tr data-kind=\"([a-z_]+)\".*?<td>([^<]+)</td><td>([^<]+)</td>", panel, re.DOTALL
    )
    assert rows == [
        ("message_received", "Mensagem recebida", "Encaminhado"),
        ("quarantined", "Corpo ilegível", "Em quarentena (não é JSON)"),
        ("unrouted", "Evento desconhecido", "Guardado sem tipo"),
    ]
    assert re.findall(r'data-testid="quantidade">(\d+)<', panel) == ["41", "2", "1"]
    assert 'data-testid="total">44<' in panel
    assert "Nenhum webhook desta instância na última hora." in client.get("/instancias/demo").text


def test_a_silent_ingest_leaves_the_instance_page_up_with_a_message(
    client: TestClient, ingest: FakeIngest
) -> None:
    """When ingest does not answer, the panel says so in words; the page still renders."""
    ingest.available = False
    log_in(client)
    page = client.get("/instancias/loja")
    assert page.status_code == 200
    assert "O serviço de recebimento de webhooks não respondeu a tempo." in page.text
