"""Real nats-server and PostgreSQL processes for tests and local runs.

Nothing starts at import: build a `NatsServer` or `EmbeddedPostgres` and call `start()`.
"""

from zapgate.devservers.nats import NatsServer, NatsServerError
from zapgate.devservers.postgres import EmbeddedPostgres, PostgresServerError

__all__ = ["EmbeddedPostgres", "NatsServer", "NatsServerError", "PostgresServerError"]
