"""Send scenarios as use cases over the in-memory fakes (no PostgreSQL, NATS or simulator)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
import stamina
from pydantic import ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import InstanceState
from zapgate.contracts.sending import (
    MessageStatusChanged,
    MessageStuck,
    SendMessage,
    SendOutcome,
    SendStatus,
    TextContent,
)
from zapgate.contracts.webhooks import DeliveryStatus, MessageStatusReported
from zapgate.sender.ports import StoreUnavailableError
from zapgate.sender.service import (
    Receipt,
    SendPolicy,
    StuckPolicy,
    answer_invalid_command,
    apply_message_status,
    send_message,
    sweep,
)
from zapgate.sender.tables import RowStatus
from zapgate.wapi.failures import ProviderTimeout

from .fakes import FakeCallLedger, Fakes

if TYPE_CHECKING:
    from collections.abc import Iterator

    from zapgate.wapi.failures import ProviderFailure
    from zapgate.wapi.results import SendAccepted

TO = "5584988887777"


@pytest.fixture
def fakes() -> Fakes:
    made = Fakes()
    made.directory.put("inst-1")
    return made


@pytest.fixture
def no_retry_waits() -> Iterator[None]:
    """stamina's test mode: retries happen at once (up to 10 attempts)."""
    stamina.set_testing(True, attempts=10)
    yield
    stamina.set_testing(False)


def command(command_id: str = "c-1", phone: str = TO, **extra: Any) -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id="inst-1",
        phone=phone,
        body=TextContent(message="olá"),
        **extra,
    )


def receipt(
    message_id: str, status: DeliveryStatus, raw: str, fakes: Fakes
) -> MessageStatusReported:
    return MessageStatusReported(
        instance_id="inst-1",
        received_at=fakes.clock.now(),
        dedupe_key=f"{message_id}:{raw}",
        raw={"event": "webhookStatus", "messageId": message_id, "status": raw},
        message_id=message_id,
        status=status,
        status_raw=raw,
    )


def outcomes(fakes: Fakes, command_id: str) -> list[SendOutcome]:
    return [
        SendOutcome.model_validate(event.model_dump())
        for event in fakes.publisher.on(subjects.send_outcome_subject(command_id))
    ]


async def test_connected_instance_sends_once_and_publishes_sent(fakes: Fakes) -> None:
    """One provider call; the stored row and the published outcome both say `sent`."""
    outcome = await send_message(command(), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.provider_message_id == "wamid-1"
    assert [call.phone for call in fakes.provider.calls] == [TO]
    assert fakes.store.rows["c-1"].status == RowStatus.SENT.value
    assert [item.status for item in outcomes(fakes, "c-1")] == [SendStatus.SENT]


async def test_a_redelivered_command_replays_its_outcome_without_a_second_call(
    fakes: Fakes,
) -> None:
    """The claim lets one delivery through; the next one gets the stored outcome, replayed."""
    first = await send_message(command(), fakes.deps)
    second = await send_message(command(), fakes.deps)

    assert first is not None
    assert second is not None
    assert second.replayed
    assert second.provider_message_id == first.provider_message_id
    assert len(fakes.provider.calls) == 1


# --- g: receipts before the answer ---------------------------------------------------------------


async def test_receipts_before_the_answer_are_kept_and_applied_when_it_lands(
    fakes: Fakes,
) -> None:
    """DELIVERY and READ arrive 8 s before the send's answer: the message ends `read`, with
    `delivered` and `read` each published once, and nothing is ever stuck."""
    kept: list[Receipt] = []

    async def receipts_first(answer: SendAccepted | ProviderFailure) -> None:
        assert not isinstance(answer, ProviderTimeout)
        message_id = getattr(answer, "message_id", "")
        kept.append(
            await apply_message_status(
                receipt(message_id, DeliveryStatus.DELIVERED, "DELIVERY", fakes), fakes.deps
            )
        )
        kept.append(
            await apply_message_status(
                receipt(message_id, DeliveryStatus.READ, "READ", fakes), fakes.deps
            )
        )
        fakes.clock.advance(timedelta(seconds=8))

    fakes.provider.before_answer = receipts_first
    receipts_at = fakes.clock.now()

    outcome = await send_message(command(), fakes.deps)

    assert kept == [Receipt.KEPT, Receipt.KEPT]
    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    row = fakes.store.rows["c-1"]
    assert row.status == RowStatus.READ.value
    assert row.sent_at == receipts_at + timedelta(seconds=8)
    assert row.delivered_at == receipts_at
    assert row.read_at == receipts_at
    moves = [
        (event.from_status, event.to_status)
        for event in fakes.publisher.on(subjects.message_status_subject("inst-1"))
        if isinstance(event, MessageStatusChanged)
    ]
    assert moves == [
        (SendStatus.SENT, SendStatus.DELIVERED),
        (SendStatus.DELIVERED, SendStatus.READ),
    ]
    assert fakes.store.early == {}
    fakes.clock.advance(timedelta(hours=1))
    report = await sweep(fakes.deps, StuckPolicy(window=timedelta(minutes=10), stall_threshold=1))
    assert report.stuck_alerted == []
    assert report.stalled == []


async def test_an_early_error_receipt_fails_the_message_when_its_answer_lands(
    fakes: Fakes,
) -> None:
    """ERROR before the answer: the accepted message ends `failed`, never a silent `sent`."""

    async def error_first(answer: SendAccepted | ProviderFailure) -> None:
        message_id = getattr(answer, "message_id", "")
        await apply_message_status(
            receipt(message_id, DeliveryStatus.FAILED, "ERROR", fakes), fakes.deps
        )

    fakes.provider.before_answer = error_first

    await send_message(command(), fakes.deps)

    assert fakes.store.rows["c-1"].status == RowStatus.FAILED.value


@pytest.mark.parametrize(
    ("status", "raw"),
    [(None, "SOMETHING_NEW"), (DeliveryStatus.PENDING, "PENDING"), (DeliveryStatus.SENT, "SERVER")],
)
async def test_receipts_that_cannot_move_a_message_are_not_kept(
    fakes: Fakes, status: DeliveryStatus | None, raw: str
) -> None:
    """Unknown words, PENDING and SERVER say nothing a later answer needs: not kept."""
    event = receipt("wamid-x", DeliveryStatus.READ, raw, fakes).model_copy(
        update={"status": status}
    )

    result = await apply_message_status(event, fakes.deps)

    assert result is Receipt.IGNORED
    assert fakes.store.early == {}


async def test_kept_receipts_are_forgotten_after_the_keep_window_only(fakes: Fakes) -> None:
    """A receipt for a message no answer ever names is dropped after `early_receipt_keep`."""
    fakes.policy = SendPolicy(early_receipt_keep=timedelta(minutes=10))
    await apply_message_status(
        receipt("wamid-phone", DeliveryStatus.DELIVERED, "DELIVERY", fakes), fakes.deps
    )
    await apply_message_status(
        receipt("wamid-phone", DeliveryStatus.DELIVERED, "DELIVERY", fakes), fakes.deps
    )
    assert len(fakes.store.early) == 1

    fakes.clock.advance(timedelta(minutes=9))
    kept = await sweep(fakes.deps, StuckPolicy())
    fakes.clock.advance(timedelta(minutes=2))
    gone = await sweep(fakes.deps, StuckPolicy())

    assert kept.early_receipts_expired == 0
    assert gone.early_receipts_expired == 1
    assert fakes.store.early == {}


async def test_stuck_time_counts_from_the_answer_not_the_call(fakes: Fakes) -> None:
    """A send answered 8 s after the call is stuck 10 min after the answer, not before."""

    async def slow(_answer: SendAccepted | ProviderFailure) -> None:
        fakes.clock.advance(timedelta(seconds=8))

    fakes.provider.before_answer = slow
    await send_message(command(), fakes.deps)
    policy = StuckPolicy(window=timedelta(minutes=10))

    fakes.clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    early = await sweep(fakes.deps, policy)
    fakes.clock.advance(timedelta(seconds=2))
    late = await sweep(fakes.deps, policy)

    assert early.stuck_alerted == []
    assert late.stuck_alerted == ["c-1"]
    (alert,) = fakes.publisher.on(subjects.message_alert_subject("inst-1"))
    assert isinstance(alert, MessageStuck)
    assert alert.stuck_for == timedelta(minutes=10, seconds=1)


# --- i: every command gets an answer -------------------------------------------------------------


def invalid(raw: dict[str, Any] | str) -> tuple[bytes, ValidationError]:
    data = raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
    try:
        SendMessage.model_validate_json(data)
    except ValidationError as error:
        return data, error
    raise AssertionError("the command was valid")


async def test_an_invalid_command_with_readable_ids_gets_a_failed_outcome_in_pt_br(
    fakes: Fakes,
) -> None:
    """Missing text and a malformed phone: failed/INVALID_COMMAND naming both fields in pt-BR."""
    data, error = invalid(
        {
            "command_id": "c-bad",
            "instance_id": "inst-1",
            "phone": "55 84 9888x",
            "body": {"kind": "text"},
        }
    )

    outcome = await answer_invalid_command(data, error, fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.kind is not None
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.INVALID_COMMAND.value
    assert outcome.error.fields is not None
    assert set(outcome.error.fields) == {"phone", "body.text.message"}
    assert outcome.error.fields["body.text.message"] == "campo obrigatório ausente"
    assert outcome.error.fields["phone"].startswith("formato não aceito")
    assert [item.error.code for item in outcomes(fakes, "c-bad") if item.error] == [
        ErrorCode.INVALID_COMMAND.value
    ]
    assert fakes.provider.calls == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json at all",
        "[1, 2]",
        {"instance_id": "inst-1", "phone": TO},
        {"command_id": 42, "instance_id": "inst-1"},
        {"command_id": "has spaces and ç", "instance_id": "inst-1"},
        {"command_id": "c-x"},
    ],
)
async def test_a_command_without_readable_ids_gets_no_outcome(
    fakes: Fakes, raw: dict[str, Any] | str
) -> None:
    """No subject to answer on: None (the handler dead-letters it), nothing published."""
    data, error = invalid(raw)

    assert await answer_invalid_command(data, error, fakes.deps) is None
    assert fakes.publisher.published == []


async def test_a_bad_copy_never_overwrites_the_outcome_of_a_stored_command(
    fakes: Fakes,
) -> None:
    """An invalid command reusing a stored command's id is not answered on its subject."""
    await send_message(command("c-1"), fakes.deps)
    data, error = invalid({"command_id": "c-1", "instance_id": "inst-1", "phone": "x"})

    assert await answer_invalid_command(data, error, fakes.deps) is None
    assert [item.status for item in outcomes(fakes, "c-1")] == [SendStatus.SENT]


@pytest.mark.parametrize(
    ("phone", "sent_to"),
    [
        ("+55 (84) 98888-7777", "5584988887777"),
        ("5584988887777@s.whatsapp.net", "5584988887777"),
        ("558488887777", "558488887777"),
        ("5584988887777", "5584988887777"),
        ("120363025555555555@g.us", "120363025555555555@g.us"),
        ("1234567890@lid", "1234567890@lid"),
    ],
)
async def test_phones_in_every_accepted_form_reach_the_provider_normalised(
    fakes: Fakes, phone: str, sent_to: str
) -> None:
    """Formatting, `+`, JIDs, groups, lids and both Brazilian mobile forms are sent."""
    outcome = await send_message(command(phone=phone), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.phone == sent_to
    assert [call.phone for call in fakes.provider.calls] == [sent_to]


async def test_a_number_without_country_code_is_refused_without_a_default(fakes: Fakes) -> None:
    """`11988887777` is not sent as is: failed with PHONE_COUNTRY_CODE_MISSING, no call."""
    outcome = await send_message(command(phone="11988887777"), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.PHONE_COUNTRY_CODE_MISSING.value
    assert outcome.error.fields is not None
    assert "11988887777" in outcome.error.fields["phone"]
    assert fakes.provider.calls == []
    again = await send_message(command(phone="11988887777"), fakes.deps)
    assert again is not None
    assert again.replayed
    assert again.error == outcome.error


async def test_a_number_without_country_code_gets_the_default_country(fakes: Fakes) -> None:
    """With BR as default, `(11) 98888-7777` is sent to 5511988887777."""
    fakes.policy = SendPolicy(default_country="BR")

    outcome = await send_message(command(phone="(11) 98888-7777"), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert [call.phone for call in fakes.provider.calls] == ["5511988887777"]


# --- j: the provider's answer is never lost ------------------------------------------------------


@pytest.mark.usefixtures("no_retry_waits")
async def test_the_answer_is_stored_once_the_database_is_back(fakes: Fakes) -> None:
    """The database goes away right after the provider accepted: the row still ends `sent`
    with the provider's messageId, after the store came back; one provider call."""

    async def database_goes_away(_answer: SendAccepted | ProviderFailure) -> None:
        fakes.store.fail_next = 4

    fakes.provider.before_answer = database_goes_away

    outcome = await send_message(command(), fakes.deps)

    assert fakes.store.refused == 4
    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    row = fakes.store.rows["c-1"]
    assert row.status == RowStatus.SENT.value
    assert row.provider_message_id == "wamid-1"
    assert len(fakes.provider.calls) == 1


@pytest.mark.usefixtures("no_retry_waits")
async def test_a_sender_that_dies_while_the_database_is_away_leaves_the_answer_parked(
    fakes: Fakes,
) -> None:
    """The process dies (here: its retries run out) before the database came back: the next
    delivery after the lease finds the parked answer and stores `sent` with its messageId,
    with no second provider call and `sent_at` at the answer."""
    fakes.policy = SendPolicy(sending_lease=timedelta(minutes=2))

    async def database_goes_away(_answer: SendAccepted | ProviderFailure) -> None:
        fakes.store.fail_next = 1_000

    fakes.provider.before_answer = database_goes_away
    answered_at = fakes.clock.now()
    with pytest.raises(StoreUnavailableError):
        await send_message(command(), fakes.deps)
    assert fakes.store.rows["c-1"].status == RowStatus.SENDING.value

    fakes.store.fail_next = 0
    fakes.provider.before_answer = None
    fakes.clock.advance(timedelta(minutes=3))
    outcome = await send_message(command(), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert outcome.provider_message_id == "wamid-1"
    row = fakes.store.rows["c-1"]
    assert (row.status, row.provider_message_id) == (RowStatus.SENT.value, "wamid-1")
    assert row.sent_at == answered_at
    assert len(fakes.provider.calls) == 1
    assert [item.status for item in outcomes(fakes, "c-1")] == [SendStatus.SENT]


async def test_a_sender_that_died_inside_the_call_with_nothing_parked_is_uncertain(
    fakes: Fakes,
) -> None:
    """No parked answer (the process died before W-API answered): `uncertain`, never resent."""
    await fakes.store.claim(command(), fakes.clock.now(), sending=True)
    fakes.clock.advance(timedelta(minutes=3))

    outcome = await send_message(command(), fakes.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.UNCERTAIN
    assert fakes.provider.calls == []


async def test_a_command_left_sending_with_no_call_on_record_is_sent_after_the_lease(
    fakes: Fakes,
) -> None:
    """With calls on record (each recorded before it is made), a `sending` row without one was
    never called (a replica fenced off, or dead, before its call): after the lease it is taken
    back and sent once; with a call on record it stays `uncertain`, never resent."""
    fakes.ledger = FakeCallLedger(fakes.store)
    await fakes.store.claim(command("c-1"), fakes.clock.now(), sending=True)
    await fakes.store.claim(command("c-2"), fakes.clock.now(), sending=True)
    fakes.ledger.called.add("c-2")
    fakes.clock.advance(timedelta(minutes=3))

    never_called = await send_message(command("c-1"), fakes.deps)
    maybe_called = await send_message(command("c-2"), fakes.deps)

    assert never_called is not None
    assert never_called.status is SendStatus.SENT
    assert maybe_called is not None
    assert maybe_called.status is SendStatus.UNCERTAIN
    assert len(fakes.provider.calls) == 1


async def test_a_paused_instance_still_fails_with_no_call(fakes: Fakes) -> None:
    """The preflight is unchanged by the new phone rules: paused fails at once."""
    fakes.directory.put("inst-1", InstanceState.CONNECTED, paused=True)

    outcome = await send_message(command(), fakes.deps)

    assert outcome is not None
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.INSTANCE_PAUSED.value
    assert fakes.provider.calls == []
