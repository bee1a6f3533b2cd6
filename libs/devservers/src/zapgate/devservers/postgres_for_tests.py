"""Pick the PostgreSQL a test session uses: an env URL, else Docker, else an embedded server."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zapgate.devservers import _admin
from zapgate.devservers.postgres import EmbeddedPostgres

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TEST_DATABASE_URL_ENV = "ZAPGATE_TEST_DATABASE_URL"
DOCKER_PROBE_TIMEOUT = 2.0
POSTGRES_IMAGE = "postgres:18-alpine"

PostgresSource = Literal["env", "testcontainers", "embedded"]


@dataclass
class TestPostgres:
    """A PostgreSQL server on which tests may create and drop databases."""

    __test__ = False  # a name starting with "Test" is not a pytest test class

    admin_url: str
    source: PostgresSource
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def url(self, database: str) -> str:
        return _admin.sqlalchemy_url(self.admin_url, database)

    def create_database(self, name: str, template: str | None = None) -> None:
        _admin.create_database(self.admin_url, name, template)

    def drop_database(self, name: str) -> None:
        _admin.drop_database(self.admin_url, name)

    def close(self) -> None:
        self._close()


def docker_answers(timeout: float = DOCKER_PROBE_TIMEOUT) -> bool:
    """True when a Docker engine answers a ping within `timeout`; never raises."""
    try:
        import docker  # noqa: PLC0415 - the SDK ships no types; optional

        client: Any = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no usable Docker" here
        return False


def postgres_for_tests(embedded_dir: Path, *, use_docker: bool | None = None) -> TestPostgres:
    """`$ZAPGATE_TEST_DATABASE_URL`, else a testcontainers PostgreSQL, else EmbeddedPostgres."""
    env_url = os.environ.get(TEST_DATABASE_URL_ENV)
    if env_url:
        return TestPostgres(_admin.sqlalchemy_url(env_url), "env")
    if use_docker if use_docker is not None else docker_answers():
        container = _start_container()
        if container is not None:
            return container
    server = EmbeddedPostgres(embedded_dir).start()
    return TestPostgres(server.admin_url, "embedded", server.stop)


def _start_container() -> TestPostgres | None:
    try:
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - optional dev dep
    except ImportError:
        return None
    container = PostgresContainer(POSTGRES_IMAGE, driver="psycopg")
    container.with_command("-c fsync=off -c synchronous_commit=off -c max_connections=200")
    container.start()
    url = str(container.get_connection_url())

    def close() -> None:
        with contextlib.suppress(Exception):
            container.stop()

    return TestPostgres(_admin.sqlalchemy_url(url), "testcontainers", close)
