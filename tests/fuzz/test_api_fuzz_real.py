"""Malformed requests to the sender's and health's NATS APIs, over a real nats-server and database.

Both services run in this test's loop (their real `create_app`), the simulator answers over
HTTP. Hypothesis sends bytes, arbitrary JSON and near-miss commands to every request subject:
each request gets a reply (never a timeout), the reply parses as the subject's reply type, and
input the command contract refuses is answered `ok=false` with `INVALID_COMMAND`. Afterwards a
valid request is still answered, so nothing crashed the handlers.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import nats
import pytest
from faststream import TestApp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError

from zapgate.contracts import subjects
from zapgate.contracts.client import SenderClient
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    CheckNow,
    CheckNowReply,
    GetInstanceHealth,
    GetInstanceHistory,
    GetQrCode,
    HealthReply,
    InstanceHistoryReply,
    InstanceListReply,
    ListInstances,
    PairingCodeReply,
    PauseInstance,
    QrCodeReply,
    RegisterInstance,
    RegistryReply,
    RemoveInstance,
    RequestPairingCode,
    RestartInstance,
    RestartReply,
)
from zapgate.contracts.sending import (
    CancelSend,
    CountStuck,
    GetSendOutcome,
    ListSends,
    RetrySend,
    SendListReply,
    SendMessage,
    SendOutcomeReply,
    SendStatus,
    StuckCountsReply,
    TextContent,
)
from zapgate.health.app import create_app as create_health
from zapgate.health.settings import HealthSettings
from zapgate.sender.app import create_app as create_sender
from zapgate.sender.settings import SenderSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from nats.aio.client import Client

    from zapgate.wapi.simulator.server import SimulatorServer

pytestmark = [pytest.mark.real, pytest.mark.slow]

T = TypeVar("T")
FUZZ: Final = settings(
    max_examples=80,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# subject -> (the command it expects, the reply it answers with)
SENDER_APIS: Final[dict[str, tuple[type[BaseModel], type[BaseModel]]]] = {
    subjects.API_SENDER_OUTCOME: (GetSendOutcome, SendOutcomeReply),
    subjects.API_SENDER_RETRY: (RetrySend, SendOutcomeReply),
    subjects.API_SENDER_CANCEL: (CancelSend, SendOutcomeReply),
    subjects.API_SENDER_LIST: (ListSends, SendListReply),
    subjects.API_SENDER_STUCK_COUNTS: (CountStuck, StuckCountsReply),
}
HEALTH_APIS: Final[dict[str, tuple[type[BaseModel], type[BaseModel]]]] = {
    subjects.API_HEALTH_REGISTER: (RegisterInstance, RegistryReply),
    subjects.API_HEALTH_LIST: (ListInstances, InstanceListReply),
    subjects.API_HEALTH_PAUSE: (PauseInstance, RegistryReply),
    subjects.API_HEALTH_REMOVE: (RemoveInstance, RegistryReply),
    subjects.API_HEALTH_GET: (GetInstanceHealth, HealthReply),
    subjects.API_HEALTH_CHECK_NOW: (CheckNow, CheckNowReply),
    subjects.API_HEALTH_RESTART: (RestartInstance, RestartReply),
    subjects.API_HEALTH_QR_CODE: (GetQrCode, QrCodeReply),
    subjects.API_HEALTH_PAIRING_CODE: (RequestPairingCode, PairingCodeReply),
    subjects.API_HEALTH_HISTORY: (GetInstanceHistory, InstanceHistoryReply),
}
FIELDS: Final = [
    "command_id",
    "new_command_id",
    "instance_id",
    "display_name",
    "token",
    "paused",
    "managed",
    "replace",
    "occurred_at",
    "event_id",
    "schema_version",
    "requested_by",
    "phone",
    "limit",
    "statuses",
    "stuck",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
near_misses = st.dictionaries(
    st.sampled_from(FIELDS),
    json_values | st.text("abcXYZ019_-:.*> ", max_size=12),
    max_size=6,
).map(lambda d: json.dumps(d).encode())
payloads = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | near_misses


def on_loop() -> Callable[[Coroutine[Any, Any, T]], T]:
    loop = asyncio.get_running_loop()

    def run(job: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(job, loop).result(timeout=30)

    return run


def accepted_by(model: type[BaseModel], payload: bytes) -> bool:
    try:
        model.model_validate_json(payload)
    except ValidationError:
        return False
    return True


@pytest.fixture
async def services(
    nats_url: str, database_url: str, wapi_simulator_server: SimulatorServer
) -> AsyncIterator[None]:
    """Health and sender, both with their real composition roots, in this loop."""
    common: dict[str, Any] = {
        "environment": "test",
        "nats_url": nats_url,
        "database_url": SecretStr(database_url),
        "probe_host": "127.0.0.1",
        "probe_port": 0,
        "log_level": "WARNING",
        "wapi_base_url": wapi_simulator_server.base_url,
    }
    health = create_health(
        HealthSettings(**common, tick_interval=timedelta(hours=1)),
        configure_logs=False,
        serve_probe=False,
    )
    sender = create_sender(
        SenderSettings(**common, sweep_every=None, min_send_gap=timedelta(0)),
        configure_logs=False,
    )
    async with TestApp(health), TestApp(sender):
        yield


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=5)
    yield client
    await client.close()


@pytest.mark.usefixtures("services")
async def test_every_health_api_request_gets_a_reply_and_malformed_ones_a_coded_refusal(
    nc: Client,
) -> None:
    """Bytes, JSON, near-miss commands on every health subject: a reply each, INVALID_COMMAND."""
    run = on_loop()
    answered: dict[str, int] = dict.fromkeys(HEALTH_APIS, 0)

    @FUZZ
    @given(subject=st.sampled_from(sorted(HEALTH_APIS)), payload=payloads)
    def ask(subject: str, payload: bytes) -> None:
        command, reply_type = HEALTH_APIS[subject]
        message = run(nc.request(subject, payload, timeout=5))
        reply: Any = reply_type.model_validate_json(message.data)
        answered[subject] += 1
        if not accepted_by(command, payload):
            assert reply.ok is False, (subject, payload, reply)
            assert reply.error.code == ErrorCode.INVALID_COMMAND, (subject, payload, reply)
            assert reply.error.message
        elif not reply.ok:
            assert reply.error.code in set(ErrorCode), reply

    await asyncio.to_thread(ask)
    assert sum(answered.values()) > 0
    # Still answering after all of it.
    listing = InstanceListReply.model_validate_json(
        (await nc.request(subjects.API_HEALTH_LIST, b"{}", timeout=5)).data
    )
    assert listing.ok


@pytest.mark.usefixtures("services")
async def test_every_well_formed_sender_api_request_gets_a_reply(nc: Client) -> None:
    """Outcome and retry requests the contract accepts: always a reply, errors coded."""
    run = on_loop()
    ids = st.text("abcXYZ019_-:", min_size=1, max_size=40)
    requests = st.one_of(
        st.builds(lambda c: (subjects.API_SENDER_OUTCOME, GetSendOutcome(command_id=c)), ids),
        st.builds(
            lambda c, n: (subjects.API_SENDER_RETRY, RetrySend(command_id=c, new_command_id=n)),
            ids,
            ids,
        ),
    )

    @FUZZ
    @given(request=requests)
    def ask(request: tuple[str, BaseModel]) -> None:
        subject, command = request
        message = run(nc.request(subject, command.model_dump_json().encode(), timeout=5))
        reply = SendOutcomeReply.model_validate_json(message.data)
        if not reply.ok:
            assert reply.error is not None
            assert reply.error.code in set(ErrorCode), reply

    await asyncio.to_thread(ask)


@pytest.mark.usefixtures("services")
async def test_malformed_sender_api_requests_get_a_coded_refusal(nc: Client) -> None:
    """Not JSON, not an object, a bad command id: `ok=false` with INVALID_COMMAND, not silence."""
    for subject, (model, reply_type) in SENDER_APIS.items():
        for payload in (b"not json", b"[]", b"{}", b'{"command_id": "a b"}'):
            if accepted_by(model, payload):  # `{}` is a whole CountStuck
                continue
            message = await nc.request(subject, payload, timeout=2)
            reply = reply_type.model_validate_json(message.data).model_dump()
            assert reply["ok"] is False
            assert reply["error"] is not None
            assert reply["error"]["code"] == ErrorCode.INVALID_COMMAND


@pytest.mark.usefixtures("services")
async def test_malformed_commands_in_the_send_stream_never_stop_the_sender(nc: Client) -> None:
    """Garbage published as commands is dropped; the next real command still gets its outcome."""
    run = on_loop()
    js = nc.jetstream()
    published: list[bytes] = []

    @settings(FUZZ, max_examples=40)
    @given(payload=payloads)
    def publish(payload: bytes) -> None:
        subject = subjects.send_command_subject("fuzz-inst")
        run(js.publish(subject, payload, stream=subjects.STREAM_SEND))
        published.append(payload)

    await asyncio.to_thread(publish)
    assert published
    command = SendMessage(
        command_id="after-the-garbage",
        instance_id="fuzz-inst",
        phone="5511988887777",
        body=TextContent(message="ainda vivo?"),
    )
    outcome = await SenderClient(nc).send(command, timeout=20)
    # The instance was never registered: an honest failure, decided by a live consumer.
    assert outcome.status is SendStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.INSTANCE_UNKNOWN
