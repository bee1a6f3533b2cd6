"""The API's use cases and pure decisions over in-memory fakes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zapgate.api.domain import (
    ALL_INSTANCES,
    Caller,
    command_id_for,
    fingerprint,
    key_id_of,
    new_key,
    owns,
)
from zapgate.api.errors import field_errors
from zapgate.api.models import SendText
from zapgate.api.service import ApiService, Authenticator, Refusal, RefusalKind
from zapgate.contracts.sending import CommandId, MessageKind, SendStatus
from zapgate.runtime.clock import ManualClock

from .conftest import cheap_hasher
from .fakes import FakeHealth, FakeKeyStore, FakeRequestLog, FakeSender

pytestmark = pytest.mark.unit

ALICE = Caller(key_id="a" * 12, name="alice", instances=frozenset({"inst-1"}))
BOB = Caller(key_id="b" * 12, name="bob", instances=frozenset({ALL_INSTANCES}))
TEXT = SendText(phone="5511988887777", message="oi")


def service(sender: FakeSender | None = None) -> tuple[ApiService, FakeSender, FakeRequestLog]:
    sender = sender or FakeSender()
    log = FakeRequestLog()
    clock = ManualClock(datetime(2026, 11, 30, tzinfo=UTC))
    return ApiService(sender, FakeHealth(), log, clock), sender, log


def test_command_ids_are_scoped_to_the_key_and_always_valid() -> None:
    """One idempotency key under two API keys names two commands; odd keys are hashed."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    valid = TypeAdapter[str](CommandId)
    odd = "pedido/ção 12#" + "x" * 180

    assert command_id_for(ALICE.key_id, "p-1") != command_id_for(BOB.key_id, "p-1")
    assert command_id_for(ALICE.key_id, "p-1") == f"{ALICE.key_id}-p-1"
    for key in ("p-1", odd, "a.b", "*", ">"):
        command_id = valid.validate_python(command_id_for(ALICE.key_id, key))
        assert owns(ALICE.key_id, command_id)
        assert not owns(BOB.key_id, command_id)


def test_key_tokens_carry_their_id_and_anything_else_has_none() -> None:
    """`zgk_<id>_<secret>` gives the id back; other shapes give None."""
    made = new_key()

    assert key_id_of(made.token) == made.key_id
    for token in ("", "zgk_", "zgk_abc_def", "Bearer x", f"zgk_{made.key_id}_", "zgk-x-y"):
        assert key_id_of(token) is None


def test_fingerprint_ignores_key_order_and_sees_every_value() -> None:
    """Equal requests in any key order agree; any changed value changes it."""
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


async def test_same_idempotency_key_twice_submits_one_command_id() -> None:
    """Two sends with one key store one request and name one command."""
    api, sender, log = service()

    first = await api.send(ALICE, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=0)
    again = await api.send(ALICE, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=5)

    assert first.message.command_id == again.message.command_id
    assert first.message.status == "accepted"
    assert again.final
    assert len(log.stored) == 1
    assert {command.command_id for command in sender.submitted} == {first.message.command_id}


async def test_reused_key_with_another_body_or_instance_is_refused() -> None:
    """Another message or another instance under a used key: IDEMPOTENCY_KEY_REUSED."""
    api, sender, _ = service()
    await api.send(BOB, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=0)
    other = SendText(phone="5511988887777", message="outra")

    with pytest.raises(Refusal) as body:
        await api.send(BOB, "inst-1", MessageKind.TEXT, other, idempotency_key="k", wait=0)
    with pytest.raises(Refusal) as instance:
        await api.send(BOB, "inst-2", MessageKind.TEXT, TEXT, idempotency_key="k", wait=0)

    assert body.value.problem.code == instance.value.problem.code == "IDEMPOTENCY_KEY_REUSED"
    assert body.value.kind is RefusalKind.UNPROCESSABLE
    assert len(sender.submitted) == 1


async def test_instance_out_of_scope_is_forbidden_before_anything_is_stored() -> None:
    """A key without the instance gets INSTANCE_FORBIDDEN and no request is remembered."""
    api, sender, log = service()

    with pytest.raises(Refusal) as refused:
        await api.send(ALICE, "inst-9", MessageKind.TEXT, TEXT, idempotency_key="k", wait=0)

    assert refused.value.kind is RefusalKind.FORBIDDEN
    assert log.stored == {}
    assert sender.submitted == []


async def test_bus_down_is_unavailable_and_the_same_key_works_once_it_is_back() -> None:
    """NATS refusing the command answers UNAVAILABLE; repeating the key later goes through."""
    sender = FakeSender(down=True)
    api, _, _ = service(sender)

    with pytest.raises(Refusal) as refused:
        await api.send(ALICE, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=0)
    sender.down = False
    sent = await api.send(ALICE, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=1)

    assert refused.value.kind is RefusalKind.UNAVAILABLE
    assert refused.value.retry_after == 1
    assert sent.message.status == SendStatus.SENT.value


async def test_another_callers_command_reads_as_not_found() -> None:
    """Bob cannot read Alice's command, even with its exact id."""
    api, _, _ = service()
    sent = await api.send(ALICE, "inst-1", MessageKind.TEXT, TEXT, idempotency_key="k", wait=1)

    mine = await api.get_message(ALICE, sent.message.command_id)
    with pytest.raises(Refusal) as theirs:
        await api.get_message(BOB, sent.message.command_id)

    assert mine.status == "sent"
    assert theirs.value.kind is RefusalKind.NOT_FOUND


async def test_verified_key_is_remembered_and_a_wrong_secret_is_not() -> None:
    """A good key is verified once per TTL; a forged secret of a known id is refused."""
    keys = FakeKeyStore()
    clock = ManualClock(datetime(2026, 11, 30, tzinfo=UTC))
    auth = Authenticator(keys, cheap_hasher(), clock, cache_ttl=60)
    created = await auth.create_key("alice", ["inst-1"])

    first = await auth.authenticate(created.token)
    second = await auth.authenticate(created.token)
    with pytest.raises(Refusal) as forged:
        await auth.authenticate(created.token[:-1] + ("A" if created.token[-1] != "A" else "B"))
    with pytest.raises(Refusal) as missing:
        await auth.authenticate(None)

    assert first == second
    assert first.instances == frozenset({"inst-1"})
    assert keys.lookups == 2  # the first verification and the forged one; the repeat was cached
    assert forged.value.problem.code == "AUTH_INVALID"
    assert missing.value.problem.code == "AUTH_MISSING"


def test_field_errors_name_the_field_with_a_portuguese_message() -> None:
    """pydantic errors become location, dotted field, stable code and a pt-BR message."""
    errors = field_errors(
        [
            {"type": "missing", "loc": ("body", "message"), "msg": "Field required"},
            {
                "type": "string_too_long",
                "loc": ("body", "caption"),
                "msg": "x",
                "ctx": {"max_length": 4096},
            },
            {"type": "missing", "loc": ("header", "Idempotency-Key"), "msg": "Field required"},
            {"type": "something_new", "loc": ("query", "wait"), "msg": "?"},
        ]
    )

    assert [(e.location, e.field, e.code) for e in errors] == [
        ("body", "message", "missing"),
        ("body", "caption", "string_too_long"),
        ("header", "Idempotency-Key", "missing"),
        ("query", "wait", "something_new"),
    ]
    assert errors[0].message == "Campo obrigatório."
    assert errors[1].message == "Deve ter no máximo 4096 caracteres."
    assert errors[3].message == "Valor inválido."
