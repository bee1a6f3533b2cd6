"""The API's PostgreSQL adapters: API keys and the idempotency-key log (SQLAlchemy Core)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from zapgate.api.domain import ApiKey
from zapgate.api.ports import StoredRequest
from zapgate.api.tables import ApiKeyRow, IdempotencyKeyRow

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

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
