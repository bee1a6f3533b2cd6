"""Real-server fixtures for every zapgate test suite (listed in the root conftest.py).

Session-wide servers start once; each test gets clean state: no leftover JetStream streams, and a
fresh database copied from a template on which every service's migrations already ran.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import nats
import pytest

from zapgate.devservers.nats import NatsServer
from zapgate.devservers.postgres import EmbeddedPostgres, PostgresServerError
from zapgate.devservers.postgres_for_tests import TestPostgres, postgres_for_tests
from zapgate.runtime.db import migrate_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server (JetStream on, fresh store dir) for the whole session."""
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store").start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's URL, after deleting every stream (and KV/object bucket) left over."""
    # A private loop in a worker thread: never touches the loop pytest-asyncio gives the test.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, delete_all_streams(nats_server.url)).result(timeout=30)
    return nats_server.url


async def delete_all_streams(url: str) -> None:
    """Delete every JetStream stream; KV and object-store buckets are streams too."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        # One listing page holds at most 256 streams; list again until none are left.
        while streams := await js.streams_info():
            for info in streams:
                if info.config.name is not None:
                    await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture
def fault_nats_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., NatsServer]]:
    """A factory of started, dedicated nats-servers that a test may kill, pause or restart."""
    servers: list[NatsServer] = []

    def start(**options: Any) -> NatsServer:  # noqa: ANN401 - forwarded to NatsServer
        server = NatsServer(tmp_path_factory.mktemp("nats-fault") / "store", **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPostgres]:
    """The session's PostgreSQL: env URL, else testcontainers, else an embedded server."""
    server = postgres_for_tests(tmp_path_factory.mktemp("postgres") / "data")
    yield server
    server.close()


@pytest.fixture(scope="session")
def migrated_template_database(postgres_server: TestPostgres) -> Iterator[str]:
    """Name of a database on which every installed service's migrations ran."""
    # Unique, so concurrent runs against one shared server (env URL) do not collide.
    name = f"zg_template_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(name)
    try:
        migrate_all(postgres_server.url(name))
        yield name
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def database_url(postgres_server: TestPostgres, migrated_template_database: str) -> Iterator[str]:
    """SQLAlchemy URL (`postgresql+psycopg://`) of a fresh, fully migrated database."""
    name = f"zg_test_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name, template=migrated_template_database)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def isolated_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: TestPostgres
) -> Iterator[Callable[..., EmbeddedPostgres]]:
    """A factory of started, dedicated EmbeddedPostgres a test may kill, pause or restart."""
    servers: list[EmbeddedPostgres] = []

    def start(**options: Any) -> EmbeddedPostgres:  # noqa: ANN401 - forwarded to EmbeddedPostgres
        server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres-fault") / "data", **options)
        servers.append(server)
        try:
            return server.start()
        except PostgresServerError as exc:
            if postgres_server.source == "env":
                pytest.skip(
                    "PostgreSQL comes from ZAPGATE_TEST_DATABASE_URL, which tests cannot restart, "
                    f"and no embedded PostgreSQL could start here: {exc}"
                )
            raise

    yield start
    for server in servers:
        server.kill()
