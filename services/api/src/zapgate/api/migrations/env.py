from zapgate.api.tables import metadata
from zapgate.runtime.db import run_env

run_env(metadata, "alembic_version_api")
