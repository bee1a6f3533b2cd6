"""The HTTP API over the real stack: health and sender composition roots, real NATS, PostgreSQL,
the W-API simulator, and the API served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from zapgate.api.domain import API_MESSAGES_PT_BR, ApiErrorCode
from zapgate.contracts.errors import ErrorCode
from zapgate.runtime.db import create_engine
from zapgate.wapi.simulator.models import FaultKind

from .conftest import CUSTOMER, INSTANCE_TOKEN, PHONE, bearer, register

if TYPE_CHECKING:
    import httpx
    from nats.aio.client import Client

    from zapgate.wapi.simulator.handle import Simulator

    from .conftest import Keys

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("services")]

TEXT = {"phone": CUSTOMER, "message": "Olá! Seu pedido saiu para entrega."}


async def _connected(nc: Client, sim: Simulator, instance_id: str) -> None:
    sim.add_instance(instance_id, INSTANCE_TOKEN, phone=PHONE)
    await register(nc, instance_id)


async def test_send_over_http_calls_the_provider_once_and_get_shows_outcome_and_timeline(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """A text sent with wait is `sent` with the provider's id; GET shows it and its timeline."""
    await _connected(nc, wapi_simulator, "inst-a")
    token = await keys.make("inst-a")

    sent = await http.post(
        "/v1/instances/inst-a/messages/text?wait=20",
        json=TEXT,
        headers=bearer(token) | {"Idempotency-Key": "pedido-1"},
    )
    read = await http.get(sent.json()["status_url"], headers=bearer(token))

    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["status"] == "sent"
    assert body["outcome"]["provider_message_id"]
    assert read.status_code == 200
    assert read.json()["outcome"]["provider_message_id"] == body["outcome"]["provider_message_id"]
    assert [step["status"] for step in read.json()["timeline"]] == ["accepted", "sent"]
    calls = wapi_simulator.calls(operation="send-text")
    assert len(calls) == 1


async def test_same_idempotency_key_twice_gives_one_provider_call_and_one_command(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """Repeating a send (202 then wait, then concurrently) never calls the provider again."""
    await _connected(nc, wapi_simulator, "inst-b")
    token = await keys.make("inst-b")
    headers = bearer(token) | {"Idempotency-Key": "pedido-2"}
    url = "/v1/instances/inst-b/messages/text"

    first = await http.post(url, json=TEXT, headers=headers)
    again = await asyncio.gather(
        *(http.post(f"{url}?wait=20", json=TEXT, headers=headers) for _ in range(3))
    )

    assert first.status_code == 202, first.text
    assert first.headers["Location"] == first.json()["status_url"]
    assert {answer.status_code for answer in again} == {200}
    assert {answer.json()["command_id"] for answer in again} == {first.json()["command_id"]}
    assert len({answer.json()["outcome"]["provider_message_id"] for answer in again}) == 1
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_same_idempotency_key_with_another_body_is_refused_and_nothing_is_sent(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """A reused key with a different message answers 422 IDEMPOTENCY_KEY_REUSED."""
    await _connected(nc, wapi_simulator, "inst-c")
    token = await keys.make("inst-c")
    headers = bearer(token) | {"Idempotency-Key": "pedido-3"}
    url = "/v1/instances/inst-c/messages/text?wait=20"

    first = await http.post(url, json=TEXT, headers=headers)
    other = await http.post(url, json=TEXT | {"message": "outra coisa"}, headers=headers)

    assert first.status_code == 200
    assert other.status_code == 422
    assert other.json()["code"] == ApiErrorCode.IDEMPOTENCY_KEY_REUSED.value
    assert other.json()["message"] == API_MESSAGES_PT_BR[ApiErrorCode.IDEMPOTENCY_KEY_REUSED]
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_idempotency_keys_are_scoped_to_the_api_key(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """Two callers using one Idempotency-Key get two commands; neither reads the other's."""
    await _connected(nc, wapi_simulator, "inst-d")
    alice, bob = await keys.make("inst-d", name="alice"), await keys.make("inst-d", name="bob")
    url = "/v1/instances/inst-d/messages/text?wait=20"

    from_alice = await http.post(url, json=TEXT, headers=bearer(alice) | {"Idempotency-Key": "x"})
    from_bob = await http.post(url, json=TEXT, headers=bearer(bob) | {"Idempotency-Key": "x"})
    peek = await http.get(from_alice.json()["status_url"], headers=bearer(bob))
    cancel = await http.delete(from_alice.json()["status_url"], headers=bearer(bob))

    assert from_alice.json()["command_id"] != from_bob.json()["command_id"]
    assert from_alice.json()["status"] == from_bob.json()["status"] == "sent"
    assert peek.status_code == 404
    assert peek.json()["code"] == ApiErrorCode.NOT_FOUND.value
    assert cancel.status_code == 404
    assert len(wapi_simulator.calls(operation="send-text")) == 2


@pytest.mark.parametrize(
    ("kind", "body", "field", "code"),
    [
        ("text", {"phone": "telefone", "message": "oi"}, "phone", "string_pattern_mismatch"),
        ("text", {"phone": "12", "message": "oi"}, "phone", "string_pattern_mismatch"),
        ("text", {"phone": CUSTOMER}, "message", "missing"),
        ("text", {"phone": CUSTOMER, "message": ""}, "message", "string_too_short"),
        (
            "text",
            {"phone": CUSTOMER, "message": "oi", "delay_message": 99},
            "delay_message",
            "less_than_equal",
        ),
        ("text", {"phone": CUSTOMER, "mesage": "oi"}, "mesage", "extra_forbidden"),
        (
            "image",
            {"phone": CUSTOMER, "image": "ftp://x/y.png"},
            "image",
            "string_pattern_mismatch",
        ),
        ("document", {"phone": CUSTOMER, "document": "https://x/y"}, "extension", "missing"),
        (
            "document",
            {"phone": CUSTOMER, "document": "https://x/y", "extension": ".pdf"},
            "extension",
            "string_pattern_mismatch",
        ),
    ],
)
async def test_invalid_body_gets_422_with_field_errors_in_pt_br_and_sends_nothing(  # noqa: PLR0913 - parametrized
    *,
    http: httpx.AsyncClient,
    keys: Keys,
    wapi_simulator: Simulator,
    kind: str,
    body: dict[str, object],
    field: str,
    code: str,
) -> None:
    """Each invalid field is named with pydantic's stable code and a Portuguese message."""
    token = await keys.make("inst-e")

    answer = await http.post(
        f"/v1/instances/inst-e/messages/{kind}",
        json=body,
        headers=bearer(token) | {"Idempotency-Key": f"bad-{kind}-{field}"},
    )

    assert answer.status_code == 422
    payload = answer.json()
    assert payload["code"] == ApiErrorCode.INVALID_REQUEST.value
    assert payload["message"] == API_MESSAGES_PT_BR[ApiErrorCode.INVALID_REQUEST]
    found = {error["field"]: error for error in payload["errors"]}
    assert found[field]["code"] == code
    assert found[field]["location"] == "body"
    assert found[field]["message"] not in {"", "Valor inválido."}
    assert wapi_simulator.calls() == []


async def test_malformed_json_missing_key_and_bad_wait_are_coded_422s(
    http: httpx.AsyncClient, keys: Keys
) -> None:
    """Broken JSON, no Idempotency-Key and wait above 30 s are refused before anything runs."""
    token = await keys.make("inst-e")
    url = "/v1/instances/inst-e/messages/text"

    broken = await http.post(
        url,
        content=b'{"phone": "55',
        headers=bearer(token) | {"Idempotency-Key": "k", "Content-Type": "application/json"},
    )
    keyless = await http.post(url, json=TEXT, headers=bearer(token))
    too_long = await http.post(
        f"{url}?wait=31", json=TEXT, headers=bearer(token) | {"Idempotency-Key": "k"}
    )

    assert broken.status_code == 422
    assert broken.json()["errors"] == [
        {
            "location": "body",
            "field": "body",
            "code": "json_invalid",
            "message": "O corpo não é um JSON válido; confira aspas, vírgulas e chaves.",
        }
    ]
    assert keyless.status_code == 422
    assert keyless.json()["errors"][0] == {
        "location": "header",
        "field": "Idempotency-Key",
        "code": "missing",
        "message": "Campo obrigatório.",
    }
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "wait"


async def test_a_value_outside_a_list_of_choices_is_explained_in_pt_br(
    http: httpx.AsyncClient, keys: Keys
) -> None:
    """An enum's choices are listed with `ou`, not pydantic's English `or`."""
    token = await keys.make("inst-e")

    answer = await http.post(
        "/v1/subscriptions",
        json={"url": "https://example.com/zapgate", "events": ["message.sent"]},
        headers=bearer(token),
    )

    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["field"] == "events.0"
    assert error["code"] == "enum"
    assert error["message"] == (
        "Valor não permitido; use um destes: "
        "'message.outcome', 'message.status' ou 'message.received'."
    )


async def test_missing_or_wrong_key_is_401_and_another_tenants_instance_is_403(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """No key, a malformed key, a forged key: 401 with codes; an instance out of scope: 403."""
    await _connected(nc, wapi_simulator, "inst-f")
    token = await keys.make("inst-other")
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    url = "/v1/instances/inst-f/messages/text"
    headers = {"Idempotency-Key": "k-auth"}

    missing = await http.post(url, json=TEXT, headers=headers)
    malformed = await http.post(url, json=TEXT, headers=headers | bearer("not-a-key"))
    wrong = await http.post(url, json=TEXT, headers=headers | bearer(forged))
    foreign = await http.post(url, json=TEXT, headers=headers | bearer(token))
    foreign_read = await http.get("/v1/instances/inst-f", headers=bearer(token))

    assert (missing.status_code, missing.json()["code"]) == (401, "AUTH_MISSING")
    assert (malformed.status_code, malformed.json()["code"]) == (401, "AUTH_INVALID")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "AUTH_INVALID")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "INSTANCE_FORBIDDEN")
    assert (foreign_read.status_code, foreign_read.json()["code"]) == (403, "INSTANCE_FORBIDDEN")
    assert wapi_simulator.calls(operation="send-text") == []


async def test_revoked_key_is_refused(
    http: httpx.AsyncClient, nats_url: str, database_url: str, nc: Client
) -> None:
    """A revoked key answers 401 AUTH_INVALID (with the verification cache off)."""
    from zapgate.api.app import running_api  # noqa: PLC0415
    from zapgate.runtime.clock import SystemClock  # noqa: PLC0415

    from .conftest import api_settings, cheap_hasher  # noqa: PLC0415

    del http, nc
    settings = api_settings(nats_url, database_url, key_cache_ttl="PT0S")
    async with running_api(settings, hasher=cheap_hasher()) as running:
        import httpx  # noqa: PLC0415

        created = await running.runtime.auth.create_key("soon-gone", ["*"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            before = await client.get("/v1/instances", headers=bearer(created.token))
            engine = create_engine(database_url)
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.text("UPDATE api_keys SET revoked_at = :now WHERE key_id = :id"),
                        {"now": SystemClock().now(), "id": created.key.key_id},
                    )
            finally:
                await engine.dispose()
            after = await client.get("/v1/instances", headers=bearer(created.token))

    assert before.status_code == 200
    assert (after.status_code, after.json()["code"]) == (401, "AUTH_INVALID")


async def test_blocked_send_gets_its_code_and_is_stored_as_failed(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """A session with no phone fails with SESSION_INCOMPLETE, stored: GET shows the same."""
    wapi_simulator.add_instance("inst-g", INSTANCE_TOKEN, phone=None)
    await register(nc, "inst-g")
    token = await keys.make("inst-g")

    sent = await http.post(
        "/v1/instances/inst-g/messages/text?wait=20",
        json=TEXT,
        headers=bearer(token) | {"Idempotency-Key": "blocked-1"},
    )
    read = await http.get(sent.json()["status_url"], headers=bearer(token))

    assert sent.status_code == 200
    assert sent.json()["status"] == "failed"
    assert sent.json()["outcome"]["error"]["code"] == ErrorCode.SESSION_INCOMPLETE.value
    assert read.json()["status"] == "failed"
    assert read.json()["outcome"]["error"]["code"] == ErrorCode.SESSION_INCOMPLETE.value
    assert wapi_simulator.calls(operation="send-text") == []


async def test_failed_send_is_retried_over_http_and_a_decided_one_cannot_be_cancelled(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """A provider failure is retried as a new linked command; cancel of a decided one is 409."""
    await _connected(nc, wapi_simulator, "inst-h")
    token = await keys.make("inst-h")
    wapi_simulator.fail("inst-h", FaultKind.SERVICE_UNAVAILABLE, operations={"send-text"}, times=3)

    failed = await http.post(
        "/v1/instances/inst-h/messages/text?wait=20",
        json=TEXT,
        headers=bearer(token) | {"Idempotency-Key": "flaky-1"},
    )
    url = failed.json()["status_url"]
    retried = await http.post(f"{url}/retry", headers=bearer(token) | {"Idempotency-Key": "r1"})
    not_again = await http.post(
        f"{retried.json()['status_url']}/retry", headers=bearer(token) | {"Idempotency-Key": "r2"}
    )
    cancel = await http.delete(url, headers=bearer(token))

    assert failed.json()["status"] == "failed", failed.text
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "sent"
    assert retried.json()["outcome"]["retry_of"] == failed.json()["command_id"]
    assert (not_again.status_code, not_again.json()["code"]) == (409, "NOT_RETRYABLE")
    assert (cancel.status_code, cancel.json()["code"]) == (409, "NOT_CANCELLABLE")


async def test_held_send_is_cancelled_over_http_and_never_sent(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """A send held for an unhealthy instance answers 202 held; DELETE fails it as CANCELLED."""
    wapi_simulator.add_instance("inst-i", INSTANCE_TOKEN, phone=None)
    await register(nc, "inst-i")
    token = await keys.make("inst-i")

    held = await http.post(
        "/v1/instances/inst-i/messages/text?wait=1",
        json=TEXT | {"hold_for_seconds": 600},
        headers=bearer(token) | {"Idempotency-Key": "hold-1"},
    )
    cancelled = await http.delete(held.json()["status_url"], headers=bearer(token))
    read = await http.get(held.json()["status_url"], headers=bearer(token))

    assert held.status_code == 202
    assert held.json()["status"] == "held"
    assert cancelled.status_code == 200
    assert cancelled.json()["outcome"]["error"]["code"] == ErrorCode.CANCELLED.value
    assert [step["status"] for step in read.json()["timeline"]] == ["accepted", "held", "failed"]
    assert wapi_simulator.calls(operation="send-text") == []


async def test_instances_are_listed_and_read_within_the_keys_scope(
    http: httpx.AsyncClient, keys: Keys, nc: Client, wapi_simulator: Simulator
) -> None:
    """GET /v1/instances lists only the key's instances; an unknown one in scope is 404."""
    await _connected(nc, wapi_simulator, "inst-j")
    await _connected(nc, wapi_simulator, "inst-k")
    token = await keys.make("inst-j", "inst-missing")
    everything = await keys.make("*")

    listed = await http.get("/v1/instances", headers=bearer(token))
    listed_all = await http.get("/v1/instances", headers=bearer(everything))
    one = await http.get("/v1/instances/inst-j", headers=bearer(token))
    missing = await http.get("/v1/instances/inst-missing", headers=bearer(token))

    assert [item["instance_id"] for item in listed.json()["instances"]] == ["inst-j"]
    assert {"inst-j", "inst-k"} <= {item["instance_id"] for item in listed_all.json()["instances"]}
    assert one.json()["state"] == "connected"
    assert one.json()["phone"] == PHONE
    assert (missing.status_code, missing.json()["code"]) == (404, "INSTANCE_UNKNOWN")


async def test_rate_limit_answers_429_with_retry_after(nats_url: str, database_url: str) -> None:
    """Past its budget a key gets 429 RATE_LIMITED with Retry-After; another key is unaffected."""
    import httpx  # noqa: PLC0415

    from zapgate.api.app import running_api  # noqa: PLC0415

    from .conftest import api_settings, cheap_hasher  # noqa: PLC0415

    settings = api_settings(
        nats_url, database_url, rate_limit_requests=3, rate_limit_period="PT60S"
    )
    async with running_api(settings, hasher=cheap_hasher()) as running:
        busy = (await running.runtime.auth.create_key("busy", ["*"])).token
        calm = (await running.runtime.auth.create_key("calm", ["*"])).token
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            answers = [await client.get("/v1/instances", headers=bearer(busy)) for _ in range(4)]
            other = await client.get("/v1/instances", headers=bearer(calm))

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert answers[-1].json()["code"] == ApiErrorCode.RATE_LIMITED.value
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert other.status_code == 200
