"""The sender's Alembic history (version table `alembic_version_sender`)."""

from zapgate.runtime.db import MigrationSpec

SPEC = MigrationSpec(
    service="sender",
    script_location="zapgate.sender:migrations",
    version_table="alembic_version_sender",
)
