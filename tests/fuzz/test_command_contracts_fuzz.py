"""Every command contract under hypothesis: valid input round-trips, invalid input is refused.

Valid commands are built from strategies that spell out each field's documented constraint;
invalid ones break exactly one constraint of a valid command, so the refusal is attributable.
Arbitrary JSON must either validate (and then round-trip) or raise pydantic's ValidationError,
never anything else.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError

from zapgate.contracts.health import (
    CheckNow,
    GetInstanceHealth,
    ListInstances,
    PauseInstance,
    RegisterInstance,
    RemoveInstance,
)
from zapgate.contracts.sending import (
    MAX_HOLD,
    AudioContent,
    DocumentContent,
    GetSendOutcome,
    ImageContent,
    RetrySend,
    SendMessage,
    TextContent,
    VideoContent,
)

if TYPE_CHECKING:
    from zapgate.contracts.envelope import Envelope

pytestmark = pytest.mark.unit

FUZZ: Final = settings(
    max_examples=80,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
DIGITS: Final = string.digits

# --- valid values, field by field ---------------------------------------------------------------

command_ids = st.text(string.ascii_letters + DIGITS + "_-:", min_size=1, max_size=128)
instance_ids = st.text(string.ascii_letters + DIGITS + "_-", min_size=1, max_size=100)
phones = (
    st.text(DIGITS, min_size=8, max_size=20)
    | st.builds(lambda g: f"{g}@g.us", st.text(DIGITS + "-", min_size=1, max_size=40))
    | st.builds(lambda n: f"{n}@lid", st.text(DIGITS, min_size=1, max_size=40))
)
media = st.builds(
    lambda scheme, rest: f"{scheme}{rest}",
    st.sampled_from(["http://", "https://", "data:"]),
    st.text(string.ascii_letters + DIGITS + "/.;,=+", max_size=60),
)
captions = st.none() | st.text(max_size=100)
bodies = st.one_of(
    st.builds(TextContent, message=st.text(min_size=1, max_size=200)),
    st.builds(ImageContent, image=media, caption=captions),
    st.builds(AudioContent, audio=media),
    st.builds(VideoContent, video=media, caption=captions),
    st.builds(
        DocumentContent,
        document=media,
        extension=st.text(string.ascii_letters + DIGITS, min_size=1, max_size=10),
        file_name=st.none() | st.text(max_size=60),
        caption=captions,
    ),
)
aware_datetimes = st.datetimes(
    timezones=st.just(UTC)
    # Real offsets are whole minutes; the wire's ISO 8601 form carries no finer ones.
    | st.integers(-12 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
)
envelopes: dict[str, Any] = {
    "event_id": st.uuids(),
    "occurred_at": aware_datetimes,
    "correlation_id": st.none() | st.text(max_size=200),
}
send_messages = st.builds(
    SendMessage,
    command_id=command_ids,
    instance_id=instance_ids,
    phone=phones,
    body=bodies,
    quoted_message_id=st.none() | st.text(max_size=200),
    delay_message=st.none() | st.integers(1, 15),
    hold_for=st.timedeltas(timedelta(0), MAX_HOLD),
    retry_of=st.none() | command_ids,
    **envelopes,
)
COMMANDS: Final[dict[type[Envelope], st.SearchStrategy[Any]]] = {
    SendMessage: send_messages,
    RetrySend: st.builds(
        RetrySend, command_id=command_ids, new_command_id=command_ids, **envelopes
    ),
    GetSendOutcome: st.builds(GetSendOutcome, command_id=command_ids, **envelopes),
    RegisterInstance: st.builds(
        RegisterInstance,
        instance_id=instance_ids,
        display_name=st.text(min_size=1, max_size=200),
        token=st.text(min_size=1, max_size=80).map(SecretStr),
        managed=st.booleans(),
        replace=st.booleans(),
        **envelopes,
    ),
    PauseInstance: st.builds(
        PauseInstance, instance_id=instance_ids, paused=st.booleans(), **envelopes
    ),
    RemoveInstance: st.builds(RemoveInstance, instance_id=instance_ids, **envelopes),
    ListInstances: st.builds(ListInstances, **envelopes),
    GetInstanceHealth: st.builds(
        GetInstanceHealth, instance_id=st.none() | instance_ids, **envelopes
    ),
    CheckNow: st.builds(CheckNow, instance_id=st.none() | instance_ids, **envelopes),
}
any_command = st.one_of(*COMMANDS.values())

# --- one broken constraint each -------------------------------------------------------------------

not_an_id = st.text(min_size=1, max_size=20).filter(
    lambda s: any(c not in string.ascii_letters + DIGITS + "_-:" for c in s)
)
_BODY_KINDS: Final = frozenset({"text", "image", "audio", "video", "document"})
# (field path, a value that breaks it) for each constrained field of each command.
BREAKERS: Final[dict[type[Envelope], list[tuple[tuple[str, ...], st.SearchStrategy[Any]]]]] = {
    SendMessage: [
        (("command_id",), not_an_id | st.just("") | st.just("x" * 129)),
        (("instance_id",), not_an_id | st.just("")),
        (("phone",), st.text(string.ascii_letters, min_size=1) | st.just("++5511999990000")),
        (("body", "kind"), st.text(max_size=10).filter(lambda s: s not in _BODY_KINDS)),
        (("delay_message",), st.integers(max_value=0) | st.integers(min_value=16)),
        (("hold_for",), st.sampled_from(["-PT1S", "P2D", "forever"])),
        (("occurred_at",), st.sampled_from(["2025-01-01T00:00:00", "yesterday", ""])),
        (("event_id",), st.text(string.ascii_letters, min_size=1, max_size=10)),
        (("schema_version",), st.integers(max_value=0)),
    ],
    RetrySend: [(("new_command_id",), not_an_id | st.just(""))],
    GetSendOutcome: [(("command_id",), not_an_id | st.none())],
    RegisterInstance: [
        (("token",), st.just("") | st.none()),
        (("display_name",), st.just("") | st.just("n" * 201)),
        (("instance_id",), not_an_id),
    ],
    PauseInstance: [(("instance_id",), not_an_id | st.none())],
    RemoveInstance: [(("instance_id",), not_an_id | st.none())],
    ListInstances: [(("correlation_id",), st.just("c" * 201) | st.integers())],
    GetInstanceHealth: [(("instance_id",), not_an_id)],
    CheckNow: [(("instance_id",), not_an_id)],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)


def _set(data: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


# --- properties -----------------------------------------------------------------------------------


@FUZZ
@given(command=any_command)
def test_every_valid_command_round_trips_through_its_wire_form(command: BaseModel) -> None:
    """JSON out and back gives the same command (the token travels; repr keeps it masked)."""
    model = type(command)
    wire = command.model_dump_json()
    assert model.model_validate_json(wire) == command
    if isinstance(command, RegisterInstance):
        assert json.loads(wire)["token"] == command.token.get_secret_value()
        assert "token=SecretStr('**********')" in repr(command)


@FUZZ
@given(data=st.data(), model=st.sampled_from(sorted(BREAKERS, key=lambda m: m.__name__)))
def test_a_command_with_one_broken_field_is_refused_with_a_validation_error(
    data: st.DataObject, model: type[Envelope]
) -> None:
    """Break one documented constraint of a valid command: validation refuses it by that field."""
    command = data.draw(COMMANDS[model])
    path, breaker = data.draw(st.sampled_from(BREAKERS[model]))
    wire = json.loads(command.model_dump_json())
    _set(wire, path, data.draw(breaker))
    with pytest.raises(ValidationError) as refused:
        model.model_validate_json(json.dumps(wire))
    located = {tuple(str(part) for part in error["loc"]) for error in refused.value.errors()}
    assert any(loc[: len(path)] == path or loc[:1] == path[:1] for loc in located), located


@FUZZ
@given(
    model=st.sampled_from(sorted(COMMANDS, key=lambda m: m.__name__)),
    payload=json_values | st.dictionaries(st.text(max_size=16), json_values, max_size=8),
)
def test_arbitrary_json_is_either_refused_or_a_command_that_round_trips(
    model: type[Envelope], payload: object
) -> None:
    """Anything at all: a ValidationError (never another exception), or a valid command."""
    try:
        command = model.model_validate_json(json.dumps(payload))
    except ValidationError:
        return
    assert model.model_validate_json(command.model_dump_json()) == command


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_validation_error(raw: bytes) -> None:
    """Bytes that are not a command's JSON object never get past validation as something else."""
    for model in COMMANDS:
        try:
            model.model_validate_json(raw)
        except ValidationError:
            continue
        # Only a JSON object can be a command, and only one with every required field.
        assert isinstance(json.loads(raw), dict)
