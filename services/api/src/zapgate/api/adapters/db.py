"""The API's PostgreSQL adapters: API keys and the idempotency-key log (SQLAlchemy Core)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from zapgate.api.domain import ApiKey, EventType, Subscription
from zapgate.api.ports import Attempt, StoredRequest
from zapgate.api.tables import ApiKeyRow, IdempotencyKeyRow, SubscriptionRow, WebhookDeliveryRow

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from zapgate.runtime.token_crypto import TokenCipher

_KEYS = ApiKeyRow.__table__  # type: ignore[attr-defined]
_REQUESTS = IdempotencyKeyRow.__table__  # type: ignore[attr-defined]


def _key(row: Any) -> ApiKey:  # noqa: ANN401 - a SQLAlchemy RowMapping
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        instances=frozenset(row["instances"]),
        secret_hash=row["secret_hash"],
        revoked=row["revoked_at"] is not None,
    )


def _request(row: Any) -> StoredRequest:  # noqa: ANN401 - a SQLAlchemy RowMapping
    return StoredRequest(
        command_id=row["command_id"],
        key_id=row["key_id"],
        instance_id=row["instance_id"],
        fingerprint=row["fingerprint"],
    )


class PostgresKeyStore:
    """`KeyStore` over the `api_keys` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._engine.connect() as conn:
            found = (
                (await conn.execute(sa.select(_KEYS).where(_KEYS.c.key_id == key_id)))
                .mappings()
                .first()
            )
        return _key(found) if found is not None else None

    async def add(self, key: ApiKey, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.insert(_KEYS).values(
                    key_id=key.key_id,
                    name=key.name,
                    secret_hash=key.secret_hash,
                    instances=sorted(key.instances),
                    created_at=now,
                )
            )

    async def revoke(self, key_id: str, now: datetime) -> bool:
        statement = (
            sa.update(_KEYS)
            .where(_KEYS.c.key_id == key_id, _KEYS.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(_KEYS.c.key_id)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def list_keys(self) -> list[ApiKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(_KEYS).order_by(_KEYS.c.created_at))).mappings()
            return [_key(row) for row in rows]


class PostgresRequestLog:
    """`RequestLog` over `api_idempotency_keys`: INSERT ... ON CONFLICT DO NOTHING, then read."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def remember(self, request: StoredRequest, now: datetime) -> StoredRequest:
        statement = (
            insert(_REQUESTS)
            .values(
                command_id=request.command_id,
                key_id=request.key_id,
                instance_id=request.instance_id,
                fingerprint=request.fingerprint,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["command_id"])
            .returning(_REQUESTS.c.command_id)
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).first() is not None:
                return request
            existing = (
                (
                    await conn.execute(
                        sa.select(_REQUESTS).where(_REQUESTS.c.command_id == request.command_id)
                    )
                )
                .mappings()
                .one()
            )
        return _request(existing)

    async def find(self, key_id: str, command_id: str) -> StoredRequest | None:
        statement = sa.select(_REQUESTS).where(
            _REQUESTS.c.command_id == command_id, _REQUESTS.c.key_id == key_id
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(statement)).mappings().first()
        return _request(found) if found is not None else None


_SUBSCRIPTIONS = SubscriptionRow.__table__  # type: ignore[attr-defined]
_DELIVERIES = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]


def _subscription(row: Any, cipher: TokenCipher, instances: Any = ()) -> Subscription:  # noqa: ANN401 - RowMapping
    return Subscription(
        subscription_id=row["subscription_id"],
        key_id=row["key_id"],
        url=row["url"],
        # Rows from before encryption read as they are until reencrypt_secrets() runs.
        secret=cipher.decrypt(row["secret"], allow_plaintext=True),
        events=frozenset(EventType(value) for value in row["events"]),
        instances=frozenset(instances or ()),
    )


class PostgresSubscriptions:
    """`SubscriptionStore` over `api_subscriptions` (removal is a soft delete).

    The signing secret is stored encrypted (`cipher`, runtime.token_crypto: the API's own
    keys); only this adapter sees it in clear, to sign. `TokenDecryptError` when no key opens a
    stored secret.
    """

    def __init__(self, engine: AsyncEngine, cipher: TokenCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def reencrypt_secrets(self) -> int:
        """Encrypt secrets stored in clear and re-encrypt those under an older key (after a
        key rotation); how many rows changed."""
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(_SUBSCRIPTIONS.c.subscription_id, _SUBSCRIPTIONS.c.secret)
                )
            ).all()
            stale = [row for row in rows if self._cipher.needs_rotation(row.secret)]
            for row in stale:
                await conn.execute(
                    sa.update(_SUBSCRIPTIONS)
                    .where(_SUBSCRIPTIONS.c.subscription_id == row.subscription_id)
                    .values(secret=self._cipher.rotate(row.secret))
                )
        return len(stale)

    async def add(self, subscription: Subscription, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.insert(_SUBSCRIPTIONS).values(
                    subscription_id=subscription.subscription_id,
                    key_id=subscription.key_id,
                    url=subscription.url,
                    secret=self._cipher.encrypt(subscription.secret),
                    events=sorted(event.value for event in subscription.events),
                    created_at=now,
                )
            )

    async def of_key(self, key_id: str) -> list[Subscription]:
        statement = (
            sa.select(_SUBSCRIPTIONS)
            .where(_SUBSCRIPTIONS.c.key_id == key_id, _SUBSCRIPTIONS.c.removed_at.is_(None))
            .order_by(_SUBSCRIPTIONS.c.created_at)
        )
        async with self._engine.connect() as conn:
            return [
                _subscription(row, self._cipher)
                for row in (await conn.execute(statement)).mappings()
            ]

    async def get(self, subscription_id: str) -> Subscription | None:
        statement = sa.select(_SUBSCRIPTIONS).where(
            _SUBSCRIPTIONS.c.subscription_id == subscription_id,
            _SUBSCRIPTIONS.c.removed_at.is_(None),
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(statement)).mappings().first()
        return _subscription(found, self._cipher) if found is not None else None

    async def remove(self, key_id: str, subscription_id: str, now: datetime) -> bool:
        statement = (
            sa.update(_SUBSCRIPTIONS)
            .where(
                _SUBSCRIPTIONS.c.subscription_id == subscription_id,
                _SUBSCRIPTIONS.c.key_id == key_id,
                _SUBSCRIPTIONS.c.removed_at.is_(None),
            )
            .values(removed_at=now)
            .returning(_SUBSCRIPTIONS.c.subscription_id)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def active(self) -> list[Subscription]:
        statement = (
            sa.select(_SUBSCRIPTIONS, _KEYS.c.instances.label("key_instances"))
            .join(_KEYS, _KEYS.c.key_id == _SUBSCRIPTIONS.c.key_id)
            .where(_SUBSCRIPTIONS.c.removed_at.is_(None), _KEYS.c.revoked_at.is_(None))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_subscription(row, self._cipher, row["key_instances"]) for row in rows]


class PostgresDeliveryLog:
    """`DeliveryLog` over `api_webhook_deliveries`: one upsert per attempt."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def start(self, subscription_id: str, webhook_id: str, now: datetime) -> Attempt:
        statement = (
            insert(_DELIVERIES)
            .values(
                subscription_id=subscription_id,
                webhook_id=webhook_id,
                attempts=1,
                first_attempt_at=now,
                last_attempt_at=now,
            )
            .on_conflict_do_update(
                index_elements=["subscription_id", "webhook_id"],
                set_={
                    "attempts": _DELIVERIES.c.attempts + 1,
                    "last_attempt_at": now,
                },
            )
            .returning(
                _DELIVERIES.c.first_attempt_at,
                _DELIVERIES.c.attempts,
                _DELIVERIES.c.delivered_at,
                _DELIVERIES.c.gave_up_at,
            )
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).one()
        return Attempt(
            first_attempt_at=row.first_attempt_at,
            attempts=row.attempts,
            delivered=row.delivered_at is not None,
            gave_up=row.gave_up_at is not None,
        )

    async def finish(
        self,
        subscription_id: str,
        webhook_id: str,
        *,
        delivered: bool,
        status: int | None,
        now: datetime,
    ) -> None:
        values: dict[str, Any] = {"last_status": status}
        values["delivered_at" if delivered else "gave_up_at"] = now
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.update(_DELIVERIES)
                .where(
                    _DELIVERIES.c.subscription_id == subscription_id,
                    _DELIVERIES.c.webhook_id == webhook_id,
                )
                .values(**values)
            )
