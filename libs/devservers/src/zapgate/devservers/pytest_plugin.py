"""Real-server fixtures for every zapgate test suite (listed in the root conftest.py).

Session-wide servers start once; each test gets clean state: freshly provisioned JetStream streams
(the topology, empty), and a fresh database copied from a template on which every service's
migrations already ran.

NATS runs with zapgate's users and permissions (libs/runtime nats_auth.py): test code connects
as the harness user the server URL carries, and every service's settings read their own nkey
seed from `ZAPGATE_<SVC>_NATS_SEED` (set for the whole session), so each service runs with
exactly its production permissions. Anonymous connections are refused.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from zapgate.devservers.nats import NatsCluster, NatsServer
from zapgate.devservers.nats_auth import DevCredentials
from zapgate.devservers.postgres import EmbeddedPostgres, PostgresServerError
from zapgate.devservers.postgres_for_tests import TestPostgres, postgres_for_tests
from zapgate.runtime import db_roles
from zapgate.runtime.db import migrate_all
from zapgate.runtime.streams import StreamProvisioningError, ensure_streams
from zapgate.runtime.topology import all_streams

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator


@pytest.fixture(scope="session")
def nats_credentials() -> Iterator[DevCredentials]:
    """Seeds of every NATS user; services' settings find theirs in the environment."""
    credentials = DevCredentials.generate()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials.service_env().items():
            patch.setenv(name, value)
        yield credentials


@pytest.fixture(scope="session")
def nats_server(
    tmp_path_factory: pytest.TempPathFactory, nats_credentials: DevCredentials
) -> Iterator[NatsServer]:
    """One nats-server (JetStream on, auth on, fresh store dir) for the whole session."""
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store", auth=nats_credentials).start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's URL (as the harness user), every stream reset: what earlier tests
    left is deleted and the topology provisioned afresh, as `zapgate-provision` does."""
    run_in_thread(reset_streams(nats_server.url))
    return nats_server.url


def run_in_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` on a private loop in a worker thread: never touches the test's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result(timeout=60)


async def reset_streams(url: str | list[str], replicas: int = 1) -> None:
    """Delete every stream, then create the topology's streams (the admin's one-shot step)
    with `replicas` copies each (3 on a three-node cluster)."""
    await delete_all_streams(url)
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        await ensure_streams(nc, all_streams(replicas))
    finally:
        await nc.close()


_NO_PEERS = "no suitable peers"
"""JetStream's answer to an R3 create while the meta leader has not seen every peer yet."""
_PLACEMENT_WAIT_S = 30.0


async def provision_cluster(urls: list[str], replicas: int) -> None:
    """`reset_streams` on a cluster that just started: every node knows the meta leader, but
    the leader may not have every peer yet (`no suitable peers for placement`) or not answer
    the JetStream API yet (a timeout); tried again until it does, for at most 30 s (a bounded
    poll: the server announces no such event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PLACEMENT_WAIT_S
    while True:
        try:
            await reset_streams(urls, replicas)
        except (StreamProvisioningError, nats.errors.TimeoutError) as error:
            not_yet = isinstance(error, nats.errors.TimeoutError) or _NO_PEERS in str(error)
            if not not_yet or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return


async def delete_all_streams(url: str | list[str]) -> None:
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
    tmp_path_factory: pytest.TempPathFactory, nats_credentials: DevCredentials
) -> Iterator[Callable[..., NatsServer]]:
    """A factory of started, dedicated nats-servers that a test may kill, pause or restart:
    auth on and the topology provisioned, like the session server (unless given a config)."""
    servers: list[NatsServer] = []

    def start(**options: Any) -> NatsServer:  # noqa: ANN401 - forwarded to NatsServer
        if "config_file" not in options:
            options.setdefault("auth", nats_credentials)
        server = NatsServer(tmp_path_factory.mktemp("nats-fault") / "store", **options)
        servers.append(server)
        server.start()
        if server.auth is not None:
            run_in_thread(reset_streams(server.url))
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def nats_cluster(
    tmp_path_factory: pytest.TempPathFactory, nats_credentials: DevCredentials
) -> Iterator[Callable[..., NatsCluster]]:
    """A factory of started three-node nats-server clusters (same wheel, loopback, auth on like
    the session server) that a test may kill nodes of; `replicas=3` (default) provisions the
    topology with R3 streams, `replicas=None` leaves the cluster empty. All stopped afterwards."""
    clusters: list[NatsCluster] = []

    def start(*, size: int = 3, replicas: int | None = 3) -> NatsCluster:
        cluster = NatsCluster(
            tmp_path_factory.mktemp("nats-cluster"), size=size, auth=nats_credentials
        )
        clusters.append(cluster)
        cluster.start()
        if replicas is not None:
            run_in_thread(provision_cluster(cluster.urls, replicas))
        return cluster

    yield start
    for cluster in clusters:
        for node in cluster.nodes:
            node.kill()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPostgres]:
    """The session's PostgreSQL: env URL, else testcontainers, else an embedded server."""
    server = postgres_for_tests(tmp_path_factory.mktemp("postgres") / "data")
    yield server
    server.close()


@pytest.fixture(scope="session")
def migrated_template_database(postgres_server: TestPostgres) -> Iterator[str]:
    """Name of a database on which every installed service's migrations ran (as the admin,
    which makes each service's role; see runtime.db_roles).

    For the whole session every service's settings log in as its own role
    (`ZAPGATE_<SVC>_DATABASE_USER`, and a password where the server asks for one), so each
    service runs with exactly its production grants; test code keeps the admin URL.
    """
    # Unique, so concurrent runs against one shared server (env URL) do not collide.
    name = f"zg_template_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(name)
    try:
        migrate_all(postgres_server.url(name))
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in service_database_logins(postgres_server, name).items():
                patch.setenv(variable, value)
            yield name
    finally:
        postgres_server.drop_database(name)


def service_database_logins(server: TestPostgres, database: str) -> dict[str, str]:
    """`ZAPGATE_<SVC>_DATABASE_USER` (and `_PASSWORD` unless the server trusts loopback, as
    the embedded one does) for every service role."""
    logins: dict[str, str] = {}
    passwords = server.source != "embedded"
    engine = sa.create_engine(server.url(database), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for service in db_roles.SERVICES:
                prefix = f"ZAPGATE_{service.upper()}_"
                logins[f"{prefix}DATABASE_USER"] = db_roles.service_role(service)
                if passwords:
                    password = secrets.token_urlsafe(32)
                    db_roles.set_role_password(connection, service, password)
                    logins[f"{prefix}DATABASE_PASSWORD"] = password
    finally:
        engine.dispose()
    return logins


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
