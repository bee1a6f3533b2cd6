from zapgate.console.tables import metadata
from zapgate.runtime.db import run_env

run_env(metadata, "alembic_version_console")
