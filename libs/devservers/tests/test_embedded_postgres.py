"""EmbeddedPostgres: starts, runs SQL, keeps data over restarts, copies template databases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest

from zapgate.devservers.postgres import EmbeddedPostgres

if TYPE_CHECKING:
    from collections.abc import Callable

    from zapgate.devservers.postgres_for_tests import TestPostgres

pytestmark = pytest.mark.real


def _conninfo(server: EmbeddedPostgres, database: str = "postgres") -> str:
    return server.url(database).replace("postgresql+psycopg://", "postgresql://")


def test_embedded_server_accepts_sql(isolated_postgres: Callable[..., EmbeddedPostgres]) -> None:
    """A fresh server answers queries on its TCP port as user postgres."""
    server = isolated_postgres()
    assert server.url() == f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/postgres"
    with psycopg.connect(_conninfo(server)) as conn:
        row = conn.execute(
            "SELECT current_user, pg_encoding_to_char(encoding) FROM pg_database "
            "WHERE datname = 'postgres'"
        ).fetchone()
    assert row == ("postgres", "UTF8")


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "sigkill"])
def test_restart_keeps_port_and_committed_rows(
    isolated_postgres: Callable[..., EmbeddedPostgres], *, kill: bool
) -> None:
    """Rows committed before a stop or a crash are there after restart, on the same port."""
    server = isolated_postgres()
    port = server.port
    with psycopg.connect(_conninfo(server), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    server.restart(kill=kill)

    assert server.port == port
    with psycopg.connect(_conninfo(server)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_kill_ends_the_server(isolated_postgres: Callable[..., EmbeddedPostgres]) -> None:
    """After kill() nothing answers on the port."""
    server = isolated_postgres()
    server.kill()
    assert not server.is_running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_conninfo(server), connect_timeout=2)


def test_create_database_copies_the_template(postgres_server: TestPostgres) -> None:
    """A database created from a template has the template's tables and rows."""
    postgres_server.create_database("zg_dev_tpl")
    try:
        tpl = postgres_server.url("zg_dev_tpl").replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(tpl, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("INSERT INTO t VALUES ('from template')")
        postgres_server.create_database("zg_dev_copy", template="zg_dev_tpl")
        copy = postgres_server.url("zg_dev_copy").replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(copy) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("from template",)]
    finally:
        postgres_server.drop_database("zg_dev_copy")
        postgres_server.drop_database("zg_dev_tpl")


def test_database_url_gives_a_fresh_database_per_test(database_url: str) -> None:
    """The per-test database exists, is empty of test data and is dropped afterwards."""
    assert database_url.startswith("postgresql+psycopg://")
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
    assert name is not None
    assert name[0].startswith("zg_test_")
