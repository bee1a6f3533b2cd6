"""The API's Alembic history (version table `alembic_version_api`)."""

from zapgate.runtime.db import MigrationSpec

SPEC = MigrationSpec(
    service="api",
    script_location="zapgate.api:migrations",
    version_table="alembic_version_api",
)
