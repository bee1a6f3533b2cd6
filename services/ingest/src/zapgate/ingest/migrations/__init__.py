"""Ingest's Alembic scripts; `SPEC` is declared under the `zapgate.migrations` entry points."""

from __future__ import annotations

from zapgate.runtime.db import MigrationSpec

SPEC = MigrationSpec(
    service="ingest",
    script_location="zapgate.ingest:migrations",
    version_table="alembic_version_ingest",
)
