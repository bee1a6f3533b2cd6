"""PostgreSQL roles: one login role per service, owning that service's tables.

Every service logs in as `zapgate_<service>` and owns exactly the tables its migrations create;
no service holds a grant on another service's tables, except where a read contract says so:
a contract is a NOLOGIN reader role holding `SELECT` on the owner's view, granted to the
reader services' roles. The one contract today is health's `instance_gate_view`, read by the
sender (health's migration 0002 grants the view to `zapgate_instance_gate_reader`).

Roles are server-wide, grants and ownership live in each database: `prepare_service_role` runs
inside every service's migration transaction (from `runtime.db.run_env`), as the migrating
administrator, and is idempotent and safe when several databases of one server migrate at once
(the test suite does). It then switches to the service's role (`SET LOCAL ROLE`), so whatever
the migration creates is owned by the service. Roles are made without a password: set one with
`zapgate-migrate` (`ZAPGATE_<SVC>_DATABASE_PASSWORD`) or `ALTER ROLE ... PASSWORD`; a role
without a password cannot log in where the server asks for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import Connection

ROLE_PREFIX: Final = "zapgate_"
SERVICES: Final = ("ingest", "sender", "health", "api", "console")
"""Services with tables of their own, hence a role of their own."""


@dataclass(frozen=True, slots=True)
class ReadContract:
    """A NOLOGIN role holding SELECT on `owner`'s contract objects, granted to `readers`."""

    role: str
    owner: str
    readers: tuple[str, ...]


CONTRACTS: Final = (
    ReadContract(role="zapgate_instance_gate_reader", owner="health", readers=("sender",)),
)


def service_role(service: str) -> str:
    """`zapgate_<service>`: the role `service` logs in as and that owns its tables."""
    return f"{ROLE_PREFIX}{service}"


def with_psycopg_driver(url: str) -> str:
    """`url` with SQLAlchemy's psycopg 3 driver (as `runtime.db.with_psycopg_driver`)."""
    return (
        sa.make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    )


def service_from_version_table(version_table: str) -> str:
    """`alembic_version_health` -> `health`."""
    return version_table.removeprefix("alembic_version_")


_ENSURE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN
        BEGIN
            CREATE ROLE {role} {login};
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this server created it at the same moment
        END;
    END IF;
END
$$
"""

_GRANT_MEMBERSHIP = """
DO $$
BEGIN
    IF NOT pg_has_role({member_name}, {group_name}, 'USAGE') THEN
        BEGIN
            GRANT {group} TO {member};
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- granted by a concurrent migration
        END;
    END IF;
END
$$
"""


def _execute(connection: Connection, statement: sql.Composable) -> None:
    # psycopg composes identifiers and literals and runs the statement on the same connection
    # (same transaction), so SQLAlchemy never parses ':' or '%' in a literal as a parameter.
    raw = connection.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    raw.execute(statement)


def _ensure_role(connection: Connection, role: str, *, login: bool) -> None:
    statement = sql.SQL(_ENSURE_ROLE).format(
        name=sql.Literal(role),
        role=sql.Identifier(role),
        login=sql.SQL("LOGIN" if login else "NOLOGIN"),
    )
    _execute(connection, statement)


def _grant_membership(connection: Connection, group: str, member: str) -> None:
    statement = sql.SQL(_GRANT_MEMBERSHIP).format(
        member_name=sql.Literal(member),
        group_name=sql.Literal(group),
        group=sql.Identifier(group),
        member=sql.Identifier(member),
    )
    _execute(connection, statement)


def ensure_roles(connection: Connection, service: str) -> None:
    """Create `service`'s login role and the contract roles it owns or reads (server-wide),
    with reader memberships. Needs CREATEROLE (or superuser)."""
    _ensure_role(connection, service_role(service), login=True)
    for contract in CONTRACTS:
        if service != contract.owner and service not in contract.readers:
            continue
        _ensure_role(connection, contract.role, login=False)
        for reader in contract.readers:
            _ensure_role(connection, service_role(reader), login=True)
            _grant_membership(connection, contract.role, service_role(reader))


def _current_user_is_privileged(connection: Connection) -> bool:
    row = connection.execute(
        sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    return bool(row)


def _reassign_own_objects(
    connection: Connection, role: str, tables: list[str], version_table: str
) -> None:
    """Give `role` the service's tables and the views built only on them, where the migrating
    user still owns them (databases migrated before roles existed)."""
    names = [*tables, version_table]
    rows = connection.execute(
        sa.text(
            """
            SELECT c.relname, c.relkind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
              AND c.relname = ANY(:names) AND pg_get_userbyid(c.relowner) = current_user
            UNION ALL
            SELECT v.table_name, 'v'
            FROM information_schema.views v
            JOIN pg_class c ON c.relname = v.table_name
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = v.table_schema
            WHERE v.table_schema = current_schema()
              AND pg_get_userbyid(c.relowner) = current_user
              AND EXISTS (
                SELECT 1 FROM information_schema.view_table_usage u
                WHERE u.view_schema = v.table_schema AND u.view_name = v.table_name)
              AND NOT EXISTS (
                SELECT 1 FROM information_schema.view_table_usage u
                WHERE u.view_schema = v.table_schema AND u.view_name = v.table_name
                  AND u.table_name <> ALL(:names))
            """
        ),
        {"names": names},
    ).all()
    for name, kind in rows:
        keyword = "VIEW" if kind == "v" else "TABLE"
        _execute(
            connection,
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(keyword), sql.Identifier(name), sql.Identifier(role)
            ),
        )


def prepare_service_role(
    connection: Connection,
    service: str,
    metadata: sa.MetaData | None,
    version_table: str,
) -> None:
    """Run before a service's migrations, in their transaction: ensure the roles, grant the
    service's role this database and schema, hand it the tables it already has, and switch to
    it (`SET LOCAL ROLE`) so new objects are its own.

    As the service's own role (a service running `migrate` itself) nothing changes; as a user
    that can neither create roles nor act as the service's role, migrations run as that user,
    as before roles existed.
    """
    role = service_role(service)
    current = connection.execute(sa.text("SELECT current_user")).scalar()
    if current == role:
        return
    if _current_user_is_privileged(connection):
        ensure_roles(connection, service)
        database = connection.execute(sa.text("SELECT current_database()")).scalar()
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
        ident = sql.Identifier(role)
        _execute(
            connection,
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(str(database)), ident
            ),
        )
        _execute(
            connection,
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(str(schema)), ident
            ),
        )
        if current is not None:
            _grant_membership(connection, role, str(current))
        tables = [table.name for table in metadata.tables.values()] if metadata is not None else []
        _reassign_own_objects(connection, role, tables, version_table)
    may_act_as = connection.execute(
        sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :role) "
            "AND pg_has_role(current_user, :role, 'MEMBER')"
        ),
        {"role": role},
    ).scalar()
    if may_act_as:
        _execute(connection, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))


def set_role_password(connection: Connection, service: str, password: str) -> None:
    """`ALTER ROLE zapgate_<service> PASSWORD ...` (the server hashes it per its settings)."""
    _execute(
        connection,
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(service_role(service)), sql.Literal(password)
        ),
    )


def password_env(service: str) -> str:
    """`ZAPGATE_<SVC>_DATABASE_PASSWORD`: the service's own setting, also read by
    `zapgate-migrate` to set the role's password."""
    return f"ZAPGATE_{service.upper()}_DATABASE_PASSWORD"


def set_role_passwords(url: str, passwords: Mapping[str, str]) -> list[str]:
    """Set the password of each `zapgate_<service>` role in `passwords` (service -> password)
    over `url` (an admin's); return the services done, sorted. Run after the migrations, which
    create the roles. Blocking."""
    engine = sa.create_engine(with_psycopg_driver(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for service in sorted(passwords):
                set_role_password(connection, service, passwords[service])
    finally:
        engine.dispose()
    return sorted(passwords)
