"""zapgate's NATS permissions over a real nats-server: who is refused, who gets through.

Denied publishes and subscriptions never raise in nats-py: the server answers `-ERR
'Permissions Violation ...'`, which reaches only `error_cb`. Each client here records those
errors, and a denial is asserted on that record (a denied request also times out).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nats
import pytest
from nats.errors import Error as NatsError
from nats.errors import NoServersError
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from zapgate.contracts import subjects
from zapgate.devservers.nats import NatsServer
from zapgate.devservers.nats_auth import DevCredentials
from zapgate.runtime import nats_auth, topology
from zapgate.runtime.pinned import fetch_pinned
from zapgate.runtime.provision_cli import provision
from zapgate.runtime.settings import ServiceSettings
from zapgate.runtime.streams import ensure_consumer, ensure_streams
from zapgate.runtime.topology import ALL_STREAMS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

pytestmark = pytest.mark.real

SERVICES = ("ingest", "health", "sender", "api", "console")
CALLER = "caller-test"
VIOLATION_WAIT = 2.0


@dataclass
class Session:
    """One connected user and the permission errors the server sent it."""

    user: str
    nc: Client
    errors: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def denied(self, action: str, subject: str) -> bool:
        """True once the server reported `action` (`publish`/`subscription`) to `subject`."""
        await self.nc.flush()
        wanted = f'permissions violation for {action} to "{subject.lower()}"'

        async def seen() -> None:
            while not any(wanted in error for error in self.errors):
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(seen(), VIOLATION_WAIT)
        except TimeoutError:
            return False
        return True


@dataclass
class AuthServer:
    url: str
    credentials: DevCredentials
    sessions: list[Session] = field(default_factory=list)

    async def connect(self, user: str) -> Session:
        session = Session(user=user, nc=None)  # type: ignore[arg-type]

        async def on_error(error: Exception) -> None:
            session.errors.append(str(error).lower())
            session.changed.set()

        session.nc = await nats.connect(
            self.url,
            connect_timeout=5,
            allow_reconnect=False,
            error_cb=on_error,
            **self.credentials.options(user),
        )
        self.sessions.append(session)
        return session


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, DevCredentials]]:
    """A nats-server with zapgate's permissions for every role and one caller system."""
    base = tmp_path_factory.mktemp("nats-auth")
    credentials = DevCredentials.generate()
    config = credentials.write_server_config(base / "auth.conf")
    server = NatsServer(base / "store", config_file=config).start()
    yield server.url, credentials
    server.stop()


@pytest.fixture
async def bus(auth_server: tuple[str, DevCredentials]) -> AsyncIterator[AuthServer]:
    """The auth server with freshly provisioned streams (by the admin user)."""
    url, credentials = auth_server
    server = AuthServer(url, credentials)
    admin = await server.connect("admin")
    js = admin.nc.jetstream()
    for info in await js.streams_info():
        if info.config.name is not None:
            await js.delete_stream(info.config.name)
    await ensure_streams(admin.nc, ALL_STREAMS)
    yield server
    for session in server.sessions:
        await session.nc.close()


async def test_an_anonymous_connection_is_refused(auth_server: tuple[str, DevCredentials]) -> None:
    """Without credentials the server closes the connection: `Authorization Violation`."""
    url, _ = auth_server
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(url, connect_timeout=5, allow_reconnect=False)


async def test_an_unknown_nkey_is_refused(auth_server: tuple[str, DevCredentials]) -> None:
    """A well-formed seed whose public key the server does not know is refused."""
    url, _ = auth_server
    stranger = nats_auth.connect_options("caller-stranger", nats_auth.new_user_seed())
    with pytest.raises((NatsError, NoServersError)):
        await nats.connect(url, connect_timeout=5, allow_reconnect=False, **stranger)


@pytest.mark.parametrize("user", [*SERVICES, CALLER, "operator"])
async def test_no_user_but_admin_creates_purges_or_deletes_a_stream(
    bus: AuthServer, user: str
) -> None:
    """Stream create, purge and delete time out for every user but admin; nothing changes."""
    session = await bus.connect(user)
    js = session.nc.jetstream(timeout=0.5)
    with pytest.raises(TimeoutError):
        await js.add_stream(name="EVIL", subjects=["evil.>"])
    assert await session.denied("publish", "$JS.API.STREAM.CREATE.EVIL")
    with pytest.raises(TimeoutError):
        await js.purge_stream(subjects.STREAM_WEBHOOKS)
    assert await session.denied("publish", f"$JS.API.STREAM.PURGE.{subjects.STREAM_WEBHOOKS}")
    with pytest.raises(TimeoutError):
        await js.delete_stream(subjects.STREAM_SEND)
    assert await session.denied("publish", f"$JS.API.STREAM.DELETE.{subjects.STREAM_SEND}")
    with pytest.raises(TimeoutError):
        await js.account_info()
    assert await session.denied("publish", "$JS.API.INFO")

    admin = await bus.connect("admin")
    names = {info.config.name for info in await admin.nc.jetstream().streams_info()}
    assert names == {spec.name for spec in ALL_STREAMS}


# What each user must never do: (publish subjects, subscribe subjects).
FORBIDDEN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ingest": (
        ("zg.send.command.demo", "zg.health.state.demo", "zg.api.health.instances.register"),
        ("zg.api.health.instances.register", "_INBOX.>", "_INBOX_sender.>", "zg.send.>"),
    ),
    "health": (
        ("zg.send.command.demo", "zg.webhook.message_received", "zg.send.outcome.c1"),
        ("zg.api.sender.outcome", "_INBOX.>", "_INBOX_caller-test.>", "zg.webhook.>"),
    ),
    "sender": (
        ("zg.send.command.demo", "zg.health.state.demo", "zg.webhook.instance_connected"),
        ("zg.api.health.instances.register", "_INBOX.>", "_INBOX_health.>", ">"),
    ),
    "api": (
        (
            "zg.api.health.instances.register",
            "zg.send.outcome.c1",
            "zg.health.state.demo",
            "zg.api.ingest.webhooks.counts",
        ),
        ("zg.api.sender.outcome", "_INBOX.>", "_INBOX_console.>", "zg.webhook.>"),
    ),
    "console": (
        ("zg.send.command.demo", "zg.health.state.demo", "zg.webhook.message_received"),
        ("zg.api.health.instances.register", "_INBOX.>", "_INBOX_api.>", "zg.send.command.*"),
    ),
    CALLER: (
        (
            "zg.api.health.instances.register",
            "zg.api.health.instances.pause",
            "zg.api.health.instances.remove",
            "zg.api.sender.retry",
            "zg.webhook.message_received",
            "zg.health.observed.proof_of_life.demo",
            "zg.send.outcome.c1",
            "zg.api.ingest.webhooks.counts",
        ),
        ("zg.api.health.instances.register", "zg.send.command.*", "_INBOX.>", "zg.webhook.>"),
    ),
    "operator": (
        ("zg.send.command.demo", "zg.health.state.demo", "$JS.API.STREAM.NAMES"),
        ("zg.api.health.instances.*", "_INBOX.>", "zg.send.command.*"),
    ),
    "admin": (
        ("zg.send.command.demo", "zg.webhook.message_received", "zg.api.health.instances.list"),
        ("zg.api.health.instances.register", "_INBOX.>", "zg.>"),
    ),
}


@pytest.mark.parametrize("user", sorted(FORBIDDEN))
async def test_each_user_is_refused_outside_its_permissions(bus: AuthServer, user: str) -> None:
    """Publishing or subscribing outside a user's role is refused by the server."""
    session = await bus.connect(user)
    publishes, subscriptions = FORBIDDEN[user]
    for subject in publishes:
        await session.nc.publish(subject, b"{}")
        assert await session.denied("publish", subject), subject
    for subject in subscriptions:
        await session.nc.subscribe(subject)
        assert await session.denied("subscription", subject), subject


@pytest.mark.parametrize("user", [*SERVICES, CALLER])
async def test_consumer_api_is_open_only_for_a_users_own_durables(
    bus: AuthServer, user: str
) -> None:
    """A user may bind its own durables; another user's durable is out of reach."""
    session = await bus.connect(user)
    js = session.nc.jetstream(timeout=1.0)
    role = nats_auth.role_for(user)
    for consumer in role.consumers:
        durable = role.durable_name(consumer)
        subscription = await js.pull_subscribe(
            consumer.filter_subject or ">", durable=durable, stream=consumer.stream
        )
        with pytest.raises(TimeoutError):  # nothing stored yet: an empty, permitted fetch
            await subscription.fetch(1, timeout=0.2)
    assert session.errors == []

    other = "sender-commands" if user != "sender" else "health-tick"
    stream = subjects.STREAM_SEND if user != "sender" else subjects.STREAM_TICKS
    with pytest.raises(TimeoutError):
        await js.consumer_info(stream, other)
    assert await session.denied("publish", f"$JS.API.CONSUMER.INFO.{stream}.{other}")
    await session.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{other}", b"{}")
    assert await session.denied("publish", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{other}")
    await session.nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{other}", b"")
    assert await session.denied("publish", f"$JS.API.CONSUMER.DELETE.{stream}.{other}")


async def test_a_caller_sends_and_reads_its_outcome_through_its_own_inbox(bus: AuthServer) -> None:
    """Caller publishes a command (PubAck to `_INBOX_caller-test`); the sender reads it from its
    durable, publishes the outcome, and the caller's durable delivers it."""
    caller = await bus.connect(CALLER)
    sender = await bus.connect("sender")
    ack = await caller.nc.jetstream().publish(
        subjects.send_command_subject("demo"), b'{"command_id":"c1"}', stream=subjects.STREAM_SEND
    )
    assert ack.stream == subjects.STREAM_SEND

    # The stream stored it on its partition; the sender reads that partition's pinned durable.
    partition = topology.sender_command_partition("demo")
    await ensure_consumer(sender.nc, partition)
    [command] = await fetch_pinned(
        sender.nc,
        stream=subjects.STREAM_SEND,
        durable=partition.durable,
        group=topology.SEND_PARTITION_GROUP,
    )
    assert command.subject == topology.stored_command_subject("demo")
    await sender.nc.jetstream().publish(
        subjects.send_outcome_subject("c1"), b'{"status":"sent"}', stream=subjects.STREAM_SEND
    )
    await command.ack_sync()

    outcomes = await caller.nc.jetstream().pull_subscribe(
        subjects.SEND_OUTCOMES_ALL, durable=f"{CALLER}-outcomes", stream=subjects.STREAM_SEND
    )
    [outcome] = await outcomes.fetch(1, timeout=5)
    assert json.loads(outcome.data) == {"status": "sent"}
    await outcome.ack_sync()
    assert caller.errors == []
    assert sender.errors == []


async def test_a_service_answers_requests_once_through_allow_responses(bus: AuthServer) -> None:
    """Health answers a caller's read request; a second reply to the same request is refused,
    and health cannot publish into the caller's inbox on its own."""
    health = await bus.connect("health")
    caller = await bus.connect(CALLER)
    replied = asyncio.Event()
    reply_to: list[str] = []

    async def answer(msg: Msg) -> None:
        reply_to.append(msg.reply)
        await msg.respond(b"first")
        await health.nc.publish(msg.reply, b"second")
        replied.set()

    await health.nc.subscribe(subjects.API_HEALTH_GET, queue="health", cb=answer)
    await health.nc.flush()
    reply = await caller.nc.request(subjects.API_HEALTH_GET, b"{}", timeout=5)
    assert reply.data == b"first"
    await asyncio.wait_for(replied.wait(), 5)
    assert reply_to[0].startswith("_INBOX_caller-test.")
    assert await health.denied("publish", reply_to[0])

    await health.nc.publish("_INBOX_caller-test.forged", b"x")
    assert await health.denied("publish", "_INBOX_caller-test.forged")


async def test_the_operator_registers_but_a_caller_cannot(bus: AuthServer) -> None:
    """Requests that carry instance tokens (register) pass for operator and console only."""
    health = await bus.connect("health")

    async def answer(msg: Msg) -> None:
        await msg.respond(b"registered")

    await health.nc.subscribe(subjects.API_HEALTH_REGISTER, cb=answer)
    await health.nc.flush()
    for user in ("operator", "console"):
        session = await bus.connect(user)
        reply = await session.nc.request(subjects.API_HEALTH_REGISTER, b"{}", timeout=5)
        assert reply.data == b"registered"
    caller = await bus.connect(CALLER)
    with pytest.raises(TimeoutError):
        await caller.nc.request(subjects.API_HEALTH_REGISTER, b"{}", timeout=0.5)
    assert await caller.denied("publish", subjects.API_HEALTH_REGISTER)


async def test_ingest_answers_the_console_and_operator_webhook_counts(bus: AuthServer) -> None:
    """Ingest serves its read API (one reply per request); the console and the operator may
    ask, and ingest may serve nothing else."""
    ingest = await bus.connect("ingest")

    async def answer(msg: Msg) -> None:
        await msg.respond(b"counts")

    await ingest.nc.subscribe(subjects.API_INGEST_WEBHOOK_COUNTS, queue="ingest-api", cb=answer)
    await ingest.nc.flush()
    for user in ("console", "operator"):
        session = await bus.connect(user)
        reply = await session.nc.request(subjects.API_INGEST_WEBHOOK_COUNTS, b"{}", timeout=5)
        assert reply.data == b"counts"
        assert session.errors == []
    await ingest.nc.subscribe(subjects.API_SENDER_LIST, queue="sender-api")
    assert await ingest.denied("subscription", subjects.API_SENDER_LIST)


async def test_services_start_against_streams_the_admin_provisioned(
    auth_server: tuple[str, DevCredentials],
) -> None:
    """On an empty server a service's `ensure_streams` is refused; after `provision` as admin
    it only looks (STREAM.INFO) and succeeds without a violation."""
    url, credentials = auth_server
    server = AuthServer(url, credentials)
    admin = await server.connect("admin")
    for info in await admin.nc.jetstream().streams_info():
        if info.config.name is not None:
            await admin.nc.jetstream().delete_stream(info.config.name)
    sender = await server.connect("sender")
    try:
        with pytest.raises(TimeoutError):
            await ensure_streams(sender.nc, ALL_STREAMS[:1])
        assert await sender.denied("publish", f"$JS.API.STREAM.CREATE.{ALL_STREAMS[0].name}")

        names = await provision(url, credentials.seed("admin"))
        assert names == [spec.name for spec in ALL_STREAMS]
        for user in ("ingest", "health", "sender", "api"):
            session = await server.connect(user)
            await ensure_streams(session.nc, ALL_STREAMS)
            assert session.errors == [], user
    finally:
        for session in server.sessions:
            await session.nc.close()


async def test_service_settings_log_in_as_the_services_own_user(
    bus: AuthServer,
) -> None:
    """`nats_seed` in settings gives `nats_connect_options()`: nkey and `_INBOX_<service>`."""
    settings = _HealthLikeSettings(
        environment="test",
        database_url=SecretStr("postgresql+psycopg://t@127.0.0.1/t"),
        nats_seed=SecretStr(bus.credentials.seed("health")),
    )
    assert settings.nats_user_name == "health"
    assert bus.credentials.seed("health") not in repr(settings)
    nc = await nats.connect(bus.url, allow_reconnect=False, **settings.nats_connect_options())
    try:
        reply = await nc.jetstream().stream_info(subjects.STREAM_HEALTH)
        assert reply.config.name == subjects.STREAM_HEALTH
    finally:
        await nc.close()
    with pytest.raises(ValidationError, match="NATS_SEED_INVALID"):
        _HealthLikeSettings(
            environment="test",
            database_url=SecretStr("postgresql+psycopg://t@127.0.0.1/t"),
            nats_seed=SecretStr("SUnot-a-seed"),
        )


class _HealthLikeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ZAPGATE_HEALTH_")
