"""The instance view kept in memory and the batched statements, over real PostgreSQL and NATS.

The projection may be stale; these tests show it can never make a send health's row forbids
(the claim re-checks the row in its own statement), that health's state-change event drops the
entry at once, and that claims batched across lanes keep each instance's order.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import sqlalchemy as sa

from zapgate.contracts import subjects
from zapgate.contracts.errors import ErrorCode
from zapgate.contracts.health import (
    DegradedReason,
    EvidenceSource,
    InstanceState,
    InstanceStateChanged,
)
from zapgate.contracts.sending import SendMessage, SendStatus, TextContent
from zapgate.runtime.consumer import Delivery
from zapgate.runtime.db import create_engine
from zapgate.sender.adapters.db import (
    PostgresCommandStore,
    PostgresInstanceDirectory,
    driver_cursor,
)
from zapgate.sender.adapters.projection import InstanceProjection
from zapgate.sender.handlers import HandlerOptions, SenderHandlers
from zapgate.sender.ports import Claim, StoreUnavailableError
from zapgate.sender.service import StuckPolicy, send_message
from zapgate.sender.tables import RowStatus, SendCommandRow

if TYPE_CHECKING:
    from nats.aio.client import Client
    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.runtime.clock import ManualClock
    from zapgate.sender.service import SenderDeps
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real]

PHONE = "5511999990000"
TO = "5511988887777"
TOKEN = "tok-sender-test"


def command(command_id: str, instance_id: str = "inst-1") -> SendMessage:
    return SendMessage(
        command_id=command_id,
        instance_id=instance_id,
        phone=TO,
        body=TextContent(message=f"msg {command_id}"),
    )


@dataclasses.dataclass
class Projected:
    deps: SenderDeps
    projection: InstanceProjection
    store: PostgresCommandStore


@pytest.fixture
def projected(deps: SenderDeps, engine: AsyncEngine) -> Projected:
    """The use cases' real dependencies with the directory kept in memory, as the app runs."""
    projection = InstanceProjection(PostgresInstanceDirectory(engine))
    store = PostgresCommandStore(engine)
    return Projected(
        dataclasses.replace(deps, directory=projection, store=store), projection, store
    )


def handlers_of(deps: SenderDeps) -> SenderHandlers:
    return SenderHandlers(deps, HandlerOptions(stuck=StuckPolicy()))


def delivery(subject: str, data: bytes) -> Delivery:
    return Delivery(
        subject=subject,
        headers={},
        stream=subjects.STREAM_HEALTH,
        consumer="test",
        sequence=1,
        num_delivered=1,
        data=data,
    )


async def test_a_send_after_the_row_turned_incomplete_is_blocked_without_any_event(
    projected: Projected, health: Any, wapi_simulator: Simulator
) -> None:
    """A missed event cannot make a false "sent": the claim re-checks health's row itself."""
    wapi_simulator.add_instance("inst-1", TOKEN, phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    first = await send_message(command("cmd-1"), projected.deps)
    # Health finds the session incomplete; no event reaches the sender, no timer runs.
    await health.put("inst-1", InstanceState.DEGRADED, reason=DegradedReason.SESSION_INCOMPLETE)
    wapi_simulator.set_phone("inst-1", None)  # the provider would still accept (the false sent)

    second = await send_message(command("cmd-2"), projected.deps)

    assert first is not None
    assert first.status is SendStatus.SENT
    assert second is not None
    assert second.status is SendStatus.FAILED
    assert second.error is not None
    assert second.error.code == ErrorCode.SESSION_INCOMPLETE.value
    assert len(wapi_simulator.calls(operation="send-text")) == 1
    assert projected.projection.hits >= 1  # the second send did start from memory


@pytest.mark.parametrize(
    "row",
    [
        (InstanceState.CONNECTED, None, None, False, ErrorCode.SESSION_INCOMPLETE),
        (InstanceState.CONNECTED, None, PHONE, True, ErrorCode.INSTANCE_PAUSED),
        (
            InstanceState.DEGRADED,
            DegradedReason.TIMEOUT_OR_GATEWAY,
            PHONE,
            False,
            ErrorCode.TIMEOUT_OR_GATEWAY,
        ),
    ],
)
async def test_every_change_of_the_row_the_preflight_reads_refuses_a_claim_from_memory(
    projected: Projected,
    health: Any,
    wapi_simulator: Simulator,
    row: tuple[InstanceState, str | None, str | None, bool, ErrorCode],
) -> None:
    """Phone gone, paused, degraded: the entry in memory says "send", the claim says no."""
    wapi_simulator.add_instance("inst-1", TOKEN, phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    await send_message(command("cmd-1"), projected.deps)
    state, reason, phone, paused, code = row
    await health.put("inst-1", state, reason=reason, phone=phone, paused=paused)

    second = await send_message(command("cmd-2"), projected.deps)

    assert second is not None
    assert second.error is not None
    assert (second.status, second.error.code) == (SendStatus.FAILED, code.value)
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_a_new_token_is_read_again_and_used_for_the_next_send(
    projected: Projected, health: Any, wapi_simulator: Simulator
) -> None:
    """A re-registered instance (new token) is not sent with the token kept in memory."""
    wapi_simulator.add_instance("inst-1", "tok-new", phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED, token="tok-old")
    await projected.projection.get("inst-1")
    await health.put("inst-1", InstanceState.CONNECTED, token="tok-new")

    outcome = await send_message(command("cmd-1"), projected.deps)

    assert outcome is not None
    assert outcome.status is SendStatus.SENT
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_healths_state_change_event_drops_the_entry_before_the_next_send(
    projected: Projected, health: Any, wapi_simulator: Simulator, nc: Client
) -> None:
    """The event over NATS drops the instance's entry: the next send reads the row again."""
    wapi_simulator.add_instance("inst-1", TOKEN, phone=PHONE)
    await health.put("inst-1", InstanceState.CONNECTED)
    handlers = handlers_of(projected.deps)
    await send_message(command("cmd-1"), projected.deps)
    assert len(projected.projection) == 1
    await health.put("inst-1", InstanceState.CONNECTED, phone=None)
    changed = InstanceStateChanged(
        instance_id="inst-1",
        from_state=InstanceState.CONNECTED,
        to_state=InstanceState.DEGRADED,
        reason=DegradedReason.SESSION_INCOMPLETE,
        source=EvidenceSource.TICK,
        observed_at=projected.deps.clock.now(),
    )
    subscription = await nc.subscribe(subjects.state_changed_subject("inst-1"))
    await nc.jetstream().publish(
        subjects.state_changed_subject("inst-1"),
        changed.model_dump_json().encode(),
        stream=subjects.STREAM_HEALTH,
    )
    message = await subscription.next_msg(timeout=5)
    await subscription.unsubscribe()

    await handlers.on_instance_state_changed(
        InstanceStateChanged.model_validate_json(message.data),
        delivery(message.subject, message.data),
    )
    hits = projected.projection.hits
    outcome = await send_message(command("cmd-2"), projected.deps)

    assert len(projected.projection) == 1  # read again, now the incomplete row
    assert projected.projection.hits == hits  # nothing of it came from memory
    assert outcome is not None
    assert outcome.error is not None
    assert outcome.error.code == ErrorCode.SESSION_INCOMPLETE.value
    assert len(wapi_simulator.calls(operation="send-text")) == 1


async def test_claims_batched_across_lanes_keep_each_instances_order(
    projected: Projected, health: Any, wapi_simulator: Simulator
) -> None:
    """Four instances, five commands each, all ready at once: claims share statements, and each
    instance's provider calls come in its commands' order, once each."""
    instances = [f"inst-{n}" for n in range(4)]
    for instance_id in instances:
        wapi_simulator.add_instance(instance_id, TOKEN, phone=PHONE)
        await health.put(instance_id, InstanceState.CONNECTED)
        await projected.projection.get(instance_id)  # kept: the first claims start together
    handlers = handlers_of(projected.deps)
    commands = [command(f"c-{n:02d}", instances[n % 4]) for n in range(20)]

    # Created in stream order: each enters its instance's lane in that order.
    await asyncio.gather(
        *(
            handlers.on_send_command(
                cmd.model_dump_json().encode(),
                delivery(subjects.send_command_subject(cmd.instance_id), b""),
            )
            for cmd in commands
        )
    )

    assert projected.store.claims.largest >= len(instances)  # the lanes' first claims together
    for instance_id in instances:
        texts = [
            call.body["message"]  # type: ignore[index, call-overload]
            for call in wapi_simulator.calls(operation="send-text", instance_id=instance_id)
        ]
        assert texts == [
            f"msg {cmd.command_id}" for cmd in commands if cmd.instance_id == instance_id
        ]
    for cmd in commands:
        row = await projected.store.get(cmd.command_id)
        assert row is not None
        assert row.status == RowStatus.SENT.value


async def test_one_command_twice_in_a_batch_is_claimed_once_and_moved_once(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """Copies of one command in the same statement: one claim is new, one move wins."""
    store = PostgresCommandStore(engine)
    now = clock.now()

    claims = await asyncio.gather(
        store.claim(command("dup-1"), now), store.claim(command("dup-1"), now)
    )
    moves = await asyncio.gather(
        *(
            store.move(
                "dup-1",
                from_statuses={RowStatus.CLAIMED},
                to=RowStatus.FAILED,
                now=now,
                error_code=code,
            )
            for code in ("FIRST", "SECOND")
        )
    )

    assert [claim.new for claim in claims] == [True, False]
    assert store.claims.largest == len(claims)  # both copies in one statement
    assert [row is not None for row in moves] == [True, False]
    stored = await store.get("dup-1")
    assert stored is not None
    assert (stored.status, stored.error_code) == (RowStatus.FAILED.value, "FIRST")


async def test_a_value_the_database_refuses_fails_its_own_claim_only(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """One bad row in a batch (a NUL, which jsonb refuses) does not fail its batch-mates."""
    store = PostgresCommandStore(engine)
    bad = command("bad-1").model_copy(update={"body": TextContent(message="nul \x00 here")})

    good, refused = await asyncio.gather(
        store.claim(command("good-1"), clock.now()),
        store.claim(bad, clock.now()),
        return_exceptions=True,
    )

    assert isinstance(good, Claim)
    assert good.new
    assert isinstance(refused, sa.exc.DBAPIError)
    assert await store.get("bad-1") is None


async def test_rows_the_store_returns_behave_as_constructed_rows(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """Rows built straight from the database's answer equal `SendCommandRow(**values)`."""
    store = PostgresCommandStore(engine)
    claim = await store.claim(command("row-1"), clock.now())
    row = claim.row

    built = SendCommandRow(**row.model_dump())
    copy = row.model_copy(update={"status": RowStatus.FAILED.value})
    row.attempts = 2

    assert built.model_dump() == {**row.model_dump(), "attempts": 0}
    assert built.model_fields_set == row.model_fields_set
    assert (copy.status, row.status) == (RowStatus.FAILED.value, RowStatus.CLAIMED.value)
    assert row.attempts == 2


async def test_the_driver_cursor_commits_each_statement_and_replaces_a_lost_connection(
    database_url: str,
) -> None:
    """The hot statements run on psycopg's own cursor: each one committed on its own (no
    transaction left open on a pooled connection), a connection the server ended is a
    `StoreUnavailableError` and is replaced, not handed out again."""
    engine = create_engine(
        database_url, pool_size=1, max_overflow=0, ping_idle_after=timedelta(hours=1)
    )
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    killer = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with driver_cursor(autocommit) as cursor:
            await cursor.execute("SELECT pg_backend_pid() AS pid")
            first = await cursor.fetchone()
            status = cursor.connection.info.transaction_status
        assert first is not None
        async with killer.connect() as conn:
            ended = sa.text("SELECT pg_terminate_backend(:pid, 10000)")
            assert (await conn.execute(ended, {"pid": first["pid"]})).scalar_one() is True

        with pytest.raises(StoreUnavailableError):
            async with driver_cursor(autocommit) as cursor:
                await cursor.execute("SELECT 1")
        async with driver_cursor(autocommit) as cursor:
            await cursor.execute("SELECT pg_backend_pid() AS pid")
            second = await cursor.fetchone()

        assert status is psycopg.pq.TransactionStatus.IDLE
        assert second is not None
        assert second["pid"] != first["pid"]
    finally:
        await engine.dispose()
        await killer.dispose()
