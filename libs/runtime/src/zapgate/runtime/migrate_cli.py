"""`zapgate-migrate`: bring every installed service's tables to head, as each service's role.

Run it as a PostgreSQL administrator (superuser, or CREATEROLE and owner of the database): it
creates the role `zapgate_<svc>` of every service (see `runtime.db_roles`) and, for each
`ZAPGATE_<SVC>_DATABASE_PASSWORD` set in the environment (the service's own setting), sets that
role's password. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from zapgate.runtime.db import migrate_all
from zapgate.runtime.db_roles import SERVICES, password_env, set_role_passwords

if TYPE_CHECKING:
    from collections.abc import Sequence

DATABASE_URL_ENV = "ZAPGATE_DATABASE_URL"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zapgate-migrate", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"PostgreSQL URL (default: ${DATABASE_URL_ENV})",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error(f"--database-url or ${DATABASE_URL_ENV} is required")
    migrated = migrate_all(args.database_url)
    names = ", ".join(spec.service for spec in migrated) or "no services installed"
    sys.stdout.write(f"migrated: {names}\n")
    installed = {spec.service for spec in migrated}
    passwords: dict[str, str] = {
        service: os.environ[password_env(service)]
        for service in SERVICES
        if service in installed and os.environ.get(password_env(service), "").strip()
    }
    if passwords:
        done = set_role_passwords(args.database_url, passwords)
        sys.stdout.write(f"role passwords set: {', '.join(done)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
