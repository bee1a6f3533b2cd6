"""Outbound webhooks go to public addresses only (SSRF guard), and subscription secrets are
encrypted at rest (#16 leftovers, #14).

Real servers throughout: the API over real NATS and PostgreSQL, a real HTTP receiver on
loopback, the machine's own resolver (`localhost`, an unresolvable `.invalid` name).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zapgate.api.adapters.db import PostgresSubscriptions
from zapgate.api.adapters.destinations import (
    DESTINATION_FORBIDDEN,
    DESTINATION_UNRESOLVABLE,
    GuardedTransport,
    refusal,
    refused_by_guard,
)
from zapgate.api.app import running_api
from zapgate.api.settings import ApiSettings
from zapgate.runtime.db import create_engine
from zapgate.runtime.probes import serve_probes
from zapgate.runtime.token_crypto import PREFIX, TokenCipher, generate_key

from .conftest import api_settings, bearer, cheap_hasher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from zapgate.api.lifecycle import RunningApi

# Address -> reason, with loopback not allowed. One per class: loopback (v4, v6, mapped),
# private ranges, link-local and the clouds' metadata addresses, shared/unspecified/reserved.
REFUSED = {
    "127.0.0.1": "loopback",
    "127.1.2.3": "loopback",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",
    "10.0.0.5": "private",
    "172.16.0.1": "private",
    "192.168.1.10": "private",
    "fd00::1": "private",
    "169.254.169.254": "link_local",  # AWS, GCP, Azure, OpenStack metadata
    "::ffff:169.254.169.254": "link_local",
    "fe80::1%eth0": "link_local",
    "fd00:ec2::254": "private",  # AWS metadata over IPv6
    "100.100.100.200": "not_global",  # Alibaba metadata, in shared 100.64/10
    "0.0.0.0": "private",  # noqa: S104 - an address under test, not a bind
    "224.0.0.1": "multicast",
    "198.51.100.7": "private",  # documentation range
    "240.0.0.1": "private",  # reserved
}
ALLOWED = ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "200.160.2.3")


@pytest.mark.unit
@pytest.mark.parametrize(("address", "reason"), sorted(REFUSED.items()))
def test_internal_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert refusal(address, allow_loopback=False) == reason


@pytest.mark.unit
@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address, allow_loopback=False) is None


@pytest.mark.unit
def test_the_loopback_opt_in_lets_loopback_through_and_nothing_else() -> None:
    """Dev opt-in: loopback only; private and metadata addresses stay refused."""
    assert refusal("127.0.0.1", allow_loopback=True) is None
    assert refusal("::1", allow_loopback=True) is None
    assert refusal("169.254.169.254", allow_loopback=True) == "link_local"
    assert refusal("10.0.0.5", allow_loopback=True) == "private"


@pytest.mark.unit
def test_the_loopback_opt_in_is_refused_in_prod() -> None:
    values = {
        "database_url": "postgresql://zapgate_api:Xq8-jT2v9LmP4wRz7KcN1bYh6DsF3gUe@db/zapgate",
        "nats_seed": None,
        "webhook_allow_loopback": True,
    }
    with pytest.raises(ValidationError, match="WEBHOOK_LOOPBACK_IN_PROD"):
        ApiSettings.model_validate({**values, "environment": "prod"})
    assert ApiSettings.model_validate({**values, "environment": "dev"}).webhook_allow_loopback


@pytest.fixture
async def guarded_api(nats_url: str, database_url: str) -> AsyncIterator[RunningApi]:
    """The API as in production: loopback not allowed."""
    settings = api_settings(nats_url, database_url, webhook_allow_loopback=False)
    async with running_api(settings, hasher=cheap_hasher()) as running:
        yield running


@pytest.mark.real
async def test_subscriptions_to_internal_or_unresolvable_hosts_are_refused_with_a_code(
    guarded_api: RunningApi, database_url: str
) -> None:
    """Loopback by address and by name, metadata, private, IPv6 loopback: 422
    WEBHOOK_DESTINATION_FORBIDDEN in pt-BR; a name that does not resolve: 422
    WEBHOOK_DESTINATION_UNRESOLVABLE; nothing is stored."""
    token = (await guarded_api.runtime.auth.create_key("ssrf", ["*"])).token
    forbidden = [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8222/varz",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://[::1]:4222/",
        "http://[::ffff:7f00:1]/hook",
        "https://2130706433/hook",  # 127.0.0.1 written as one number
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{guarded_api.port}") as api:
        answers = {
            url: await api.post("/v1/subscriptions", json={"url": url}, headers=bearer(token))
            for url in [*forbidden, "https://zapgate-no-such-host.invalid/hook"]
        }
    for url in forbidden:
        body = answers[url].json()
        assert (answers[url].status_code, body["code"]) == (422, DESTINATION_FORBIDDEN), url
        assert "endereço interno" in body["message"]
    unresolvable = answers["https://zapgate-no-such-host.invalid/hook"]
    assert (unresolvable.status_code, unresolvable.json()["code"]) == (
        422,
        DESTINATION_UNRESOLVABLE,
    )
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(sa.text("SELECT count(*) FROM api_subscriptions"))
    finally:
        await engine.dispose()
    assert stored == 0


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[list[bytes], int]]:
    """A real HTTP receiver on loopback; the bodies it got."""
    got: list[bytes] = []

    async def endpoint(request: Request) -> Response:
        got.append(await request.body())
        return Response(status_code=204)

    server = await serve_probes(
        Starlette(routes=[Route("/hook", endpoint, methods=["POST"])]), "127.0.0.1", 0
    )
    yield got, server.port
    await server.stop()


@pytest.mark.real
async def test_every_connection_is_checked_so_a_name_turned_internal_is_refused(
    receiver: tuple[list[bytes], int],
) -> None:
    """The delivery client checks the address it connects to (not only the URL at creation):
    `localhost` is refused without the opt-in and reached with it, over the same transport."""
    got, port = receiver
    url = f"http://localhost:{port}/hook"
    async with httpx.AsyncClient(transport=GuardedTransport(allow_loopback=False)) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post(url, content=b"{}")
    cause = refused_by_guard(refused.value)
    assert cause is not None
    assert (cause.code, cause.reason) == (DESTINATION_FORBIDDEN, "loopback")
    assert got == []
    async with httpx.AsyncClient(transport=GuardedTransport(allow_loopback=True)) as client:
        answer = await client.post(url, content=b'{"ok": true}')
    assert answer.status_code == 204
    assert got == [b'{"ok": true}']


@pytest.mark.real
async def test_subscription_secrets_are_encrypted_at_rest_and_rotate(
    api: RunningApi, database_url: str, receiver: tuple[list[bytes], int]
) -> None:
    """The secret shown once at creation is stored only as ciphertext; after a key rotation
    `reencrypt_secrets` moves the row to the new key and the old key may go."""
    _, port = receiver
    token = (await api.runtime.auth.create_key("enc", ["*"])).token
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as client:
        made = await client.post(
            "/v1/subscriptions",
            json={"url": f"http://127.0.0.1:{port}/hook"},
            headers=bearer(token),
        )
    assert made.status_code == 201
    secret = made.json()["secret"]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(sa.text("SELECT secret FROM api_subscriptions"))
        assert stored.startswith(PREFIX)
        assert secret not in stored
        assert secret.removeprefix("whsec_") not in stored
        old_keys = api_settings("nats://unused", database_url).token_keys
        new_key = generate_key()
        rotated = PostgresSubscriptions(engine, TokenCipher([new_key, *old_keys]))
        assert await rotated.reencrypt_secrets() == 1
        assert await rotated.reencrypt_secrets() == 0
        only_new = PostgresSubscriptions(engine, TokenCipher([new_key]))
        (subscription,) = await asyncio.wait_for(only_new.active(), 10)
    finally:
        await engine.dispose()
    assert subscription.secret == secret
