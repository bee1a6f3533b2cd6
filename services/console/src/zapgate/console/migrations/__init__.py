"""The console's Alembic history, applied by `zapgate-migrate` and the test fixtures."""

from __future__ import annotations

from zapgate.runtime.db import MigrationSpec

SPEC = MigrationSpec(
    service="console",
    script_location="zapgate.console:migrations",
    version_table="alembic_version_console",
)
