"""PostgreSQL roles per service (#14): each service owns its tables and reads nothing else,
except what a read contract grants (health's `instance_gate_view` to the sender).

Runs over the session's real PostgreSQL, on a database the fixtures migrated as the admin;
every check logs in as the service's own role, the way the services do in every test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import errors, sql
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from zapgate.api.settings import ApiSettings
from zapgate.console.settings import ConsoleSettings
from zapgate.health.migrations import SPEC as HEALTH_MIGRATIONS
from zapgate.health.settings import HealthSettings
from zapgate.ingest.settings import IngestSettings
from zapgate.runtime import db_roles, migrate_cli
from zapgate.runtime.db import migrate
from zapgate.sender.settings import SenderSettings

if TYPE_CHECKING:
    from zapgate.runtime.settings import ServiceSettings

pytestmark = pytest.mark.real

# What each service owns (its tables and its Alembic version table). A new table lands in a
# service's migrations and is owned by that service's role; this list makes the change visible.
OWNED = {
    "ingest": {
        "webhook_payloads", "webhook_quarantine", "ingest_dead_letters", "alembic_version_ingest",
    },
    "sender": {
        "send_commands", "send_delivery_stalls", "send_early_receipts", "sender_dead_letters",
        "send_partitions", "send_calls", "alembic_version_sender",
    },
    "health": {
        "instances", "instance_transitions", "instance_notifications", "instance_gate_view",
        "health_dead_letters", "alembic_version_health",
    },
    "api": {
        "api_keys", "api_idempotency_keys", "api_subscriptions", "api_webhook_deliveries",
        "api_dead_letters", "alembic_version_api",
    },
    "console": {"console_audit_log", "alembic_version_console"},
}  # fmt: skip
# Read contracts: (reader service, relation). Nothing else crosses a service boundary.
CONTRACT_READS = {("sender", "instance_gate_view")}

SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "sender": SenderSettings,
    "health": HealthSettings,
    "api": ApiSettings,
    "console": ConsoleSettings,
}


def _libpq(url: str, user: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if user is not None:
        parsed = parsed.set(username=user)
    return parsed.render_as_string(hide_password=False)


def _owners(database_url: str) -> dict[str, str]:
    with psycopg.connect(_libpq(database_url)) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v')"
        ).fetchall()
    return dict(rows)


def _login_url(database_url: str, service: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL `service`'s settings connect with (the fixtures set its user, maybe password)."""
    monkeypatch.setenv(f"ZAPGATE_{service.upper()}_ENVIRONMENT", "test")
    # Settings fields some services require; irrelevant to the database login.
    monkeypatch.setenv("ZAPGATE_INGEST_WEBHOOK_SECRETS", "x" * 40)
    monkeypatch.setenv("ZAPGATE_CONSOLE_SESSION_SECRET", "y" * 40)
    settings = SETTINGS[service](database_url=SecretStr(database_url))
    return settings.database_url.get_secret_value()


def test_every_relation_is_owned_by_its_service_role(database_url: str) -> None:
    """No table or view is left to the migrating admin; each belongs to its service's role."""
    expected = {
        name: db_roles.service_role(service) for service, names in OWNED.items() for name in names
    }
    assert _owners(database_url) == expected


@pytest.mark.parametrize("service", sorted(OWNED))
def test_the_service_settings_log_in_as_the_service_role(
    service: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In every test, the services' settings replace the admin user with their own role."""
    url = make_url(_login_url(database_url, service, monkeypatch))
    assert url.username == db_roles.service_role(service)
    assert url.database == make_url(database_url).database


@pytest.mark.parametrize("service", sorted(OWNED))
def test_a_role_may_use_its_tables_and_is_refused_everyone_elses(
    service: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `zapgate_<service>`: own tables read and written; any other service's table refused
    for SELECT, INSERT, UPDATE and DELETE; a contract view readable, never writable."""
    url = _libpq(_login_url(database_url, service, monkeypatch))
    refused: list[tuple[str, str]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (db_roles.service_role(service),)
        for relations in OWNED.values():
            for relation in sorted(relations):
                table = sql.Identifier(relation)
                checks = {
                    "SELECT": sql.SQL("SELECT * FROM {} LIMIT 1").format(table),
                    "INSERT": sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table),
                    "UPDATE": sql.SQL("UPDATE {} SET {} = {} WHERE false").format(
                        table, sql.Identifier(_first_column(conn, relation)),
                        sql.Identifier(_first_column(conn, relation)),
                    ),
                    "DELETE": sql.SQL("DELETE FROM {} WHERE false").format(table),
                }  # fmt: skip
                refused += [
                    (verb, relation)
                    for verb, statement in checks.items()
                    if _try(conn, statement) == "refused"
                ]
    others = {rel for owner, rels in OWNED.items() if owner != service for rel in rels}
    readable = {rel for reader, rel in CONTRACT_READS if reader == service}
    expected_refused = {
        (verb, relation)
        for relation in others
        for verb in ("SELECT", "INSERT", "UPDATE", "DELETE")
        if not (verb == "SELECT" and relation in readable)
    }
    # A contract view is read-only to its reader too.
    expected_refused |= {(verb, rel) for rel in readable for verb in ("INSERT", "UPDATE", "DELETE")}
    # Exactly these: everything else (own tables, the contract's SELECT) ran.
    assert set(refused) == expected_refused


def _first_column(conn: psycopg.Connection[tuple[object, ...]], relation: str) -> str:
    # Catalog read, allowed to every role: names only, never rows.
    row = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = %s ORDER BY ordinal_position LIMIT 1",
        (relation,),
    ).fetchone()
    if row is None:
        # information_schema hides columns of tables the role has no right on; pg_attribute
        # does not.
        row = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1",
            (relation,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _try(conn: psycopg.Connection[tuple[object, ...]], statement: sql.Composed) -> str:
    """`refused` (insufficient privilege, or not updatable), else `allowed` (ran, or failed on
    a constraint after the privilege check passed)."""
    try:
        conn.execute(statement)
    except (errors.InsufficientPrivilege, errors.ObjectNotInPrerequisiteState):
        return "refused"
    except (
        errors.NotNullViolation,
        errors.CheckViolation,
        errors.ForeignKeyViolation,
        errors.UniqueViolation,
    ):
        return "allowed"
    except errors.FeatureNotSupported:
        # Writing a view that cannot be written: refused in effect (the view is a contract).
        return "refused"
    return "allowed"


async def test_migrating_again_hands_the_admins_old_tables_to_the_service(
    database_url: str,
) -> None:
    """A database migrated before roles existed (tables owned by the admin) is handed over by
    the next migration: tables and the views built only on them."""
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE instances OWNER TO current_user")
        conn.execute("ALTER VIEW instance_gate_view OWNER TO current_user")
        conn.execute("ALTER TABLE alembic_version_health OWNER TO current_user")
    admin_owned = _owners(database_url)
    assert admin_owned["instances"] != "zapgate_health"
    await asyncio.to_thread(migrate, database_url, HEALTH_MIGRATIONS)
    owners = _owners(database_url)
    assert owners["instances"] == "zapgate_health"
    assert owners["instance_gate_view"] == "zapgate_health"
    assert owners["alembic_version_health"] == "zapgate_health"


def test_zapgate_migrate_sets_each_role_password_from_the_service_setting(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ZAPGATE_<SVC>_DATABASE_PASSWORD` (the service's own setting) becomes the role's
    password, stored hashed by the server and never printed."""
    env = db_roles.password_env("console")
    # Roles are server-wide: keep the password the fixtures gave it, where they gave one.
    password = os.environ.get(env) or secrets.token_urlsafe(32)
    monkeypatch.setenv(env, password)
    assert migrate_cli.main(["--database-url", database_url]) == 0
    printed = capsys.readouterr().out
    assert "role passwords set: console" in printed
    assert password not in printed
    with psycopg.connect(_libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'zapgate_console'"
        ).fetchone()
    assert row is not None
    assert str(row[0]).startswith("SCRAM-SHA-256$")
