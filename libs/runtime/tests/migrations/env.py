from zapgate.runtime.db import run_env

run_env(None, "alembic_version_sample")
