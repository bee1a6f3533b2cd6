"""`Timer` over asyncio: the confirmation delay and backoff waits in production."""

from __future__ import annotations

import asyncio
from datetime import timedelta


class AsyncioTimer:
    async def sleep(self, delay: timedelta) -> None:
        await asyncio.sleep(max(delay.total_seconds(), 0.0))
