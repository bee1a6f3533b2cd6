"""No instance token in clear at rest: after a full flow over the real services, a scan of every
column of every table finds the token nowhere, while the provider got it in clear."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.conftest import check_now, register, unique
from zapgate.contracts.client import SenderClient
from zapgate.contracts.sending import SendMessage, SendStatus, TextContent
from zapgate.runtime.token_crypto import PREFIX

if TYPE_CHECKING:
    from nats.aio.client import Client

    from tests.e2e.conftest import Stack
    from zapgate.wapi.simulator.handle import Simulator

pytestmark = [pytest.mark.real, pytest.mark.slow]

_TABLES = sa.text(
    "SELECT table_schema, table_name FROM information_schema.tables "
    "WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
)


async def _tables_holding(database_url: str, needle: str) -> dict[str, int]:
    """Rows per table whose text form (every column) contains `needle`."""
    engine = create_async_engine(database_url)
    found: dict[str, int] = {}
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(_TABLES)).all()
            assert tables, "no tables to scan"
            for schema, table in tables:
                name = f'"{schema}"."{table}"'
                count = await conn.scalar(
                    # S608: names come from information_schema, the needle is a bound parameter.
                    sa.text(f"SELECT count(*) FROM {name} t WHERE strpos(t::text, :needle) > 0"),  # noqa: S608
                    {"needle": needle},
                )
                if count:
                    found[name] = int(count)
    finally:
        await engine.dispose()
    return found


async def test_no_table_holds_an_instance_token_in_clear_after_a_full_flow(
    flow_stack: Stack, client: Client, wapi_simulator: Simulator
) -> None:
    """Register, check and send with a distinctive token; the provider saw it in clear (health
    and sender decrypted it); no column of any table holds it, the registry holds ciphertext."""
    token = f"tok-{secrets.token_hex(16)}"
    instance_id = unique("at-rest")
    wapi_simulator.add_instance(
        instance_id, token, webhook_url=flow_stack.webhook_url, phone="5511900000077"
    )
    await register(client, instance_id, token)
    assert (await check_now(client, instance_id)).ok  # health called the provider with it
    command = SendMessage(
        command_id=unique("cmd"),
        instance_id=instance_id,
        phone="5511988887777",
        body=TextContent(message="segredo em repouso"),
    )
    outcome = await SenderClient(client).send(command, timeout=30)
    assert outcome.status is SendStatus.SENT, outcome  # the sender called it with the token too

    assert await _tables_holding(flow_stack.database_url, token) == {}
    stored = await _tables_holding(flow_stack.database_url, PREFIX)
    assert any(table.endswith('"instances"') for table in stored), stored
