"""Key rotation of stored instance tokens over a real PostgreSQL: health's start moves every row
to the newest key, after which the old key can be dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from zapgate.health.adapters.db import PostgresHealthRepository, instances
from zapgate.runtime.token_crypto import TokenCipher, generate_key

pytestmark = pytest.mark.real

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


async def test_a_rotation_moves_every_stored_token_to_the_newest_key(database_url: str) -> None:
    """Rows under the old key and rows in clear are re-encrypted once; then the new key alone
    opens every row and a second pass changes nothing."""
    old_key, new_key = generate_key(), generate_key()
    engine = create_async_engine(database_url)
    try:
        before = PostgresHealthRepository(engine, TokenCipher([old_key]))
        await before.register(
            instance_id="i-old",
            display_name="old",
            token="token-under-old-key",
            managed=True,
            replace_existing=False,
            now=NOW,
        )
        async with engine.begin() as conn:
            row = (await conn.execute(sa.select(instances).limit(1))).mappings().one()
            await conn.execute(
                sa.insert(instances).values(
                    {**row, "instance_id": "i-plain", "token": "token-in-clear"}
                )
            )

        during = PostgresHealthRepository(engine, TokenCipher([new_key, old_key]))
        assert await during.reencrypt_tokens() == 2
        assert await during.reencrypt_tokens() == 0

        async with engine.connect() as conn:
            stored = dict(
                (await conn.execute(sa.select(instances.c.instance_id, instances.c.token))).all()
            )
        after = TokenCipher([new_key])
        assert after.decrypt(stored["i-old"]) == "token-under-old-key"
        assert after.decrypt(stored["i-plain"]) == "token-in-clear"
        assert "token-in-clear" not in stored.values()
    finally:
        await engine.dispose()
