"""PostgreSQL access: the async engine, a ping, and per-service Alembic migrations.

Every service owns its tables and its own Alembic history in one shared database; histories are
kept apart by a version table per service (`alembic_version_<svc>`). Migrations run as the
service's PostgreSQL role (`zapgate_<svc>`, see `runtime.db_roles`), which then owns the tables.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from zapgate.runtime.db_roles import prepare_service_role, service_from_version_table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

MIGRATIONS_ENTRY_POINT_GROUP = "zapgate.migrations"
DRIVER = "postgresql+psycopg"
_URL_ATTRIBUTE = "zapgate.database_url"
_VERSION_TABLE_ATTRIBUTE = "zapgate.version_table"
_SERVICE_ATTRIBUTE = "zapgate.service"


def with_psycopg_driver(url: str) -> str:
    """Accept `postgresql://` or `postgres://` too, and always use psycopg 3."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed!r}")
    return parsed.set(drivername=DRIVER).render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    ping_idle_after: timedelta | None = None,
) -> AsyncEngine:
    """An async engine that pings a pooled connection before handing it out, so connections
    broken by a database restart are replaced instead of failing a statement.

    `ping_idle_after`: ping only a connection that sat in the pool at least this long (None:
    every checkout, SQLAlchemy's `pool_pre_ping`). A busy service's connections come back
    within milliseconds, and a ping per checkout is a round trip per statement it runs (the
    sender's profile: 5 % of its CPU); a restart between two uses that close together costs
    one statement a `DisconnectionError`-class failure, which callers treat as an outage.
    """
    engine = create_async_engine(
        with_psycopg_driver(url),
        pool_pre_ping=ping_idle_after is None,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        # Recycle before typical proxy/firewall idle cut-offs.
        pool_recycle=1800,
    )
    if ping_idle_after is not None:
        _ping_when_idle(engine, ping_idle_after.total_seconds())
    return engine


_CHECKED_IN_AT = "zapgate_checked_in_at"


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Pool events: record when a connection came back; at checkout, ping it with the dialect's
    own ping if it sat idle `idle_s` or longer. A failed ping raises `DisconnectionError`, on
    which the pool discards the connection and hands out a fresh one (SQLAlchemy's documented
    way for a checkout listener to report a dead connection)."""
    dialect = engine.sync_engine.dialect
    pool = engine.sync_engine.pool

    def checked_in(_dbapi_connection: Any, record: Any) -> None:  # noqa: ANN401 - SQLAlchemy's event signature
        if record is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:  # noqa: ANN401 - SQLAlchemy's event signature
        since = record.info.get(_CHECKED_IN_AT)
        if since is None or time.monotonic() - since < idle_s:
            return  # new, or back in the pool a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            raise sa.exc.DisconnectionError(str(error)[:300]) from error

    sa.event.listen(pool, "checkin", checked_in)
    sa.event.listen(pool, "checkout", checked_out)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers `SELECT 1`."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


@dataclass(frozen=True, slots=True)
class MigrationSpec:
    """Where one service's Alembic scripts live and which version table records its history.

    `script_location` is a package resource path such as `"zapgate.health:migrations"`.
    """

    service: str
    script_location: str
    version_table: str


def alembic_config(url: str, spec: MigrationSpec) -> Config:
    config = Config()
    config.set_main_option("script_location", spec.script_location)
    # Passed as attributes, not main options: configparser would choke on "%" in passwords.
    config.attributes[_URL_ATTRIBUTE] = with_psycopg_driver(url)
    config.attributes[_VERSION_TABLE_ATTRIBUTE] = spec.version_table
    config.attributes[_SERVICE_ATTRIBUTE] = spec.service
    return config


def migrate(url: str, spec: MigrationSpec) -> None:
    """`alembic upgrade head` for one service. Blocking: from async code use `to_thread`."""
    command.upgrade(alembic_config(url, spec), "head")


def discover_migrations() -> list[MigrationSpec]:
    """Every installed service's spec, from the `zapgate.migrations` entry-point group."""
    specs: list[MigrationSpec] = []
    for entry_point in importlib.metadata.entry_points(group=MIGRATIONS_ENTRY_POINT_GROUP):
        spec = entry_point.load()
        if not isinstance(spec, MigrationSpec):
            raise TypeError(f"entry point {entry_point.value} is not a MigrationSpec: {spec!r}")
        specs.append(spec)
    return sorted(specs, key=lambda spec: spec.service)


def migrate_all(url: str, specs: Sequence[MigrationSpec] | None = None) -> list[MigrationSpec]:
    """Migrate every installed service (or `specs`) to head; return what was migrated."""
    chosen = list(specs) if specs is not None else discover_migrations()
    for spec in chosen:
        migrate(url, spec)
    return chosen


def run_env(target_metadata: sa.MetaData | None, version_table: str | None = None) -> None:
    """The whole body of a service's `migrations/env.py`.

    ```python
    from zapgate.runtime.db import run_env
    from zapgate.health.tables import metadata
    run_env(metadata, "alembic_version_health")
    ```
    """
    from alembic import context  # noqa: PLC0415 - only exists while Alembic runs env.py

    config = context.config
    url = config.attributes.get(_URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through zapgate.runtime.db.migrate")
    table = version_table or config.attributes[_VERSION_TABLE_ATTRIBUTE]
    service = config.attributes.get(_SERVICE_ATTRIBUTE) or service_from_version_table(table)
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": table,
        "include_object": _own_objects_only,
        "compare_type": True,
    }
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(with_psycopg_driver(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                # Replicas of one service starting together must not run the same DDL twice.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:table))"), {"table": table}
                )
                # Objects are created as (and owned by) the service's role: runtime.db_roles.
                prepare_service_role(connection, service, target_metadata, table)
                context.run_migrations()
    finally:
        engine.dispose()


def _own_objects_only(  # the signature Alembic calls include_object with
    obj: object,
    name: str | None,
    type_: str,
    reflected: bool,  # noqa: FBT001 - positional in Alembic's callback signature
    compare_to: object | None,
) -> bool:
    # Other services' tables share the database: autogenerate must not propose dropping them.
    del obj, name
    return not (type_ == "table" and reflected and compare_to is None)
