"""`zapgate-migrate`: bring every installed service's tables to head."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from zapgate.runtime.db import migrate_all

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
