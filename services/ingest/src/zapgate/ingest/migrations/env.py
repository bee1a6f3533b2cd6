from zapgate.ingest.tables import ingest_metadata
from zapgate.runtime.db import run_env

run_env(ingest_metadata(), "alembic_version_ingest")
