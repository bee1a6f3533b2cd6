"""A connection's log lines never carry the NATS password of its URL (real nats-server, auth on)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from zapgate.runtime.connection import ConnectionOptions, NatsConnection

if TYPE_CHECKING:
    from zapgate.devservers.nats import NatsServer

pytestmark = pytest.mark.real

WAIT = 10.0


async def test_nats_connected_names_the_server_without_the_urls_password(
    nats_server: NatsServer,
) -> None:
    """`nats_connected` says where (host:port), never `user:password@` from the URL."""
    assert nats_server.auth is not None
    password = nats_server.auth.harness_password
    assert password in nats_server.url  # the URL logs in as `harness:<password>`
    connection = NatsConnection(nats_server.url, ConnectionOptions(name="log-test"))
    with capture_logs() as lines:
        await connection.start()
        try:
            await connection.wait_connected(WAIT)
        finally:
            await connection.close()

    [connected] = [line for line in lines if line["event"] == "nats_connected"]
    assert connected["url"] == f"{nats_server.host}:{nats_server.port}"
    assert password not in repr(lines)
