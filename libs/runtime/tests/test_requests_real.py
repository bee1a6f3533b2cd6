"""Request-reply and the embedded HTTP server, over a real nats-server and real HTTP."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import nats
import pytest
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from zapgate.contracts.errors import MESSAGES_PT_BR, ErrorCode, Problem
from zapgate.runtime.connection import ConnectionOptions, NatsConnection
from zapgate.runtime.http import HttpServerError, serve_http
from zapgate.runtime.requests import (
    NoAnswer,
    RequestRefused,
    RequestServer,
    ask,
    request_handler,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from starlette.requests import Request

pytestmark = pytest.mark.real

WAIT = 10.0
SUBJECT = "rt.api.greet"


class Greet(BaseModel):
    name: str = Field(max_length=20)
    times: int = 1


class GreetReply(BaseModel):
    ok: bool
    text: str | None = None
    error: Problem | None = None


class UnknownNameError(Exception):
    pass


async def greet(request: Greet) -> GreetReply:
    if request.name == "paused":
        raise RequestRefused(Problem.of(ErrorCode.INSTANCE_PAUSED))
    if request.name == "ghost":
        raise UnknownNameError
    if request.name == "bug":
        raise RuntimeError("secret-input-text")
    return GreetReply(ok=True, text=" ".join([f"olá {request.name}"] * request.times))


async def _ask(nc: Client, body: bytes) -> GreetReply:
    reply = await nc.request(SUBJECT, body, timeout=WAIT)
    return GreetReply.model_validate_json(reply.data)


@asynccontextmanager
async def _served(url: str) -> AsyncIterator[tuple[NatsConnection, Client]]:
    connection = NatsConnection(url, ConnectionOptions(name="api-test"))
    await connection.start()
    await connection.wait_for_connects(1, WAIT)
    handler = request_handler(
        Greet, GreetReply, greet, refusals={UnknownNameError: ErrorCode.NOT_FOUND}
    )
    server = RequestServer(connection, SUBJECT, "api", handler)
    await server.start()
    caller = await nats.connect(url)
    try:
        await connection.require().flush()
        yield connection, caller
    finally:
        await server.stop()
        await caller.close()
        await connection.close()


async def test_every_request_gets_a_reply_and_bad_input_a_coded_pt_br_refusal(
    nats_url: str,
) -> None:
    """Valid, malformed, invalid, refused, mapped and failing requests: each gets a reply with
    `ok` and, when refused, a stable code with its pt-BR message; no internal text leaks."""
    async with _served(nats_url) as (_connection, caller):
        good = await _ask(caller, b'{"name": "ana", "times": 2}')
        not_json = await _ask(caller, b"{not json")
        wrong = await _ask(caller, b'{"times": "x", "name": "' + b"a" * 30 + b'"}')
        not_object = await _ask(caller, b"[1, 2]")
        paused = await _ask(caller, b'{"name": "paused"}')
        ghost = await _ask(caller, b'{"name": "ghost"}')
        bug = await _ask(caller, b'{"name": "bug"}')

    assert good == GreetReply(ok=True, text="olá ana olá ana")
    for refused in (not_json, wrong, not_object):
        assert refused.ok is False
        assert refused.error is not None
        assert refused.error.code == ErrorCode.INVALID_COMMAND
        assert refused.error.message == MESSAGES_PT_BR[ErrorCode.INVALID_COMMAND]
    assert not_json.error is not None
    assert not_json.error.fields == {"(corpo)": "o corpo não é um JSON válido"}
    assert wrong.error is not None
    assert wrong.error.fields == {
        "name": "texto longo demais",
        "times": "deve ser um número inteiro",
    }
    assert not_object.error is not None
    assert not_object.error.fields == {"(corpo)": "deve ser um objeto JSON"}
    assert paused.error == Problem.of(ErrorCode.INSTANCE_PAUSED)
    assert ghost.error == Problem.of(ErrorCode.NOT_FOUND)
    assert bug.error == Problem.of(ErrorCode.INTERNAL, detail="RuntimeError")
    assert "secret-input-text" not in bug.model_dump_json()


async def test_the_request_server_answers_again_after_its_client_is_replaced(nats_url: str) -> None:
    """A protocol error makes nats-py close the client; the server subscribes on the new one."""
    async with _served(nats_url) as (connection, caller):
        before = await _ask(caller, b'{"name": "a"}')
        await connection.require().publish("rt." + "z" * 5000, b"")
        new_client = await connection.wait_for_connects(2, WAIT)
        await new_client.flush()
        after = await _ask(caller, b'{"name": "b"}')

    assert (before.text, after.text) == ("olá a", "olá b")


async def test_ask_decodes_the_typed_reply_and_says_when_nobody_answers(nats_url: str) -> None:
    """`ask` returns the verb's answer as its reply model; a subject nobody serves raises
    `NoAnswer` (no responders), one whose subscriber stays silent raises it after the timeout."""
    async with _served(nats_url) as (_connection, caller):
        good = await ask(caller, SUBJECT, Greet(name="ana"), GreetReply, timeout=WAIT)
        with pytest.raises(NoAnswer) as nobody:
            await ask(caller, "rt.api.nobody", Greet(name="ana"), GreetReply, timeout=WAIT)
        silent = await caller.subscribe("rt.api.silent")  # subscribed, never answers
        await caller.flush()
        with pytest.raises(NoAnswer) as late:
            await ask(caller, "rt.api.silent", Greet(name="ana"), GreetReply, timeout=0.2)
        await silent.unsubscribe()

    assert good == GreetReply(ok=True, text="olá ana")
    assert (nobody.value.no_responders, late.value.no_responders) == (True, False)
    assert str(nobody.value) == "no service answers rt.api.nobody"
    assert str(late.value) == "rt.api.silent did not answer in 0.2s"


def _app(*, failing_lifespan: bool = False) -> Starlette:
    async def hello(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if failing_lifespan:
            raise RuntimeError("database unreachable")
        yield

    return Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)


async def test_serve_http_returns_once_listening_and_stops_cleanly() -> None:
    """The first request right after serve_http returns is answered; a pre-bound socket works."""
    server = await serve_http(_app(), lifespan="on")
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    on_socket = await serve_http(_app(), sock=listening)
    try:
        async with httpx.AsyncClient() as client:
            first = await client.get(f"{server.url}/hello")
            second = await client.get(f"http://127.0.0.1:{listening.getsockname()[1]}/hello")
        assert (first.status_code, first.text) == (200, "ok")
        assert second.status_code == 200
    finally:
        await server.stop()
        await on_socket.stop()
    assert server.task.done()
    assert on_socket.task.done()


async def test_serve_http_raises_when_the_port_is_taken_or_the_lifespan_fails() -> None:
    """A start that fails raises HttpServerError instead of exiting or hanging."""
    taken = await serve_http(_app())
    try:
        with pytest.raises(HttpServerError):
            await asyncio.wait_for(serve_http(_app(), port=taken.port), WAIT)
        with pytest.raises(HttpServerError):
            await asyncio.wait_for(serve_http(_app(failing_lifespan=True), lifespan="on"), WAIT)
    finally:
        await taken.stop()
