from zapgate.runtime.db import run_env
from zapgate.sender.tables import metadata

run_env(metadata, "alembic_version_sender")
