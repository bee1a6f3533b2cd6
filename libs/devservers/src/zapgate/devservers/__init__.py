"""Real nats-server and PostgreSQL processes for tests and local runs.

Nothing starts at import: build a `NatsServer`, `NatsCluster` or `EmbeddedPostgres` and call
`start()`.
"""

from zapgate.devservers.nats import NatsCluster, NatsServer, NatsServerError
from zapgate.devservers.postgres import EmbeddedPostgres, PostgresServerError

__all__ = [
    "EmbeddedPostgres",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "PostgresServerError",
]
