"""`ports.BodyStore` over JetStream's Object Store: large bodies, chunked, kept like the streams.

The bucket `ZG_WEBHOOK_BODIES` (stream `OBJ_ZG_WEBHOOK_BODIES`) is declared on every (re)connect
with the streams' replicas and retention, so a body lives as long as the event pointing at it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.object_store import ObjectStore

    from zapgate.runtime.connection import NatsConnection

BODIES_BUCKET: Final = "ZG_WEBHOOK_BODIES"
BODIES_MAX_AGE: Final = timedelta(days=7)  # as ZG_WEBHOOKS


async def ensure_bodies_bucket(client: Client, *, replicas: int = 1) -> None:
    """Create the bucket unless it exists (idempotent; run after every connect)."""
    js = client.jetstream()
    try:
        await js.object_store(BODIES_BUCKET)
    except BucketNotFoundError:
        await js.create_object_store(
            BODIES_BUCKET,
            config=ObjectStoreConfig(
                description="Exact bodies of webhooks too large for one bus message",
                ttl=BODIES_MAX_AGE.total_seconds(),
                storage=StorageType.FILE,
                replicas=replicas,
            ),
        )


class ObjectStoreBodies:
    """Put and get bodies by name over the shared connection; fails at once when disconnected."""

    def __init__(self, connection: NatsConnection, *, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._store: ObjectStore | None = None
        self._client: Client | None = None

    async def _bucket(self) -> ObjectStore:
        client = self._connection.require()
        if self._store is None or self._client is not client:
            self._store = await client.jetstream(timeout=self._timeout).object_store(BODIES_BUCKET)
            self._client = client
        return self._store

    async def put(self, name: str, data: bytes) -> None:
        await (await self._bucket()).put(name, data)

    async def get(self, name: str) -> bytes:
        try:
            result = await (await self._bucket()).get(name)
        except ObjectNotFoundError as error:
            raise LookupError(name) from error
        return bytes(result.data or b"")
