"""CREATE/DROP DATABASE over an admin connection, shared by every kind of PostgreSQL we use."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

SQLALCHEMY_DRIVER = "postgresql+psycopg"


def sqlalchemy_url(url: str, database: str | None = None) -> str:
    """`url` with the psycopg 3 driver (and optionally another database), password kept."""
    parsed = make_url(url).set(drivername=SQLALCHEMY_DRIVER)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    # CREATE DATABASE cannot run inside a transaction block.
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


def drop_database(admin_url: str, name: str) -> None:
    # FORCE ends sessions a test left open, so teardown never hangs on them.
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)
