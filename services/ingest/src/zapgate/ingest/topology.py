"""The streams ingest uses, declared idempotently at startup.

No shared `zapgate.runtime.topology` existed when ingest was written; these specs should move
there so that every service declares the same configuration for a shared stream.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from zapgate.contracts import subjects
from zapgate.runtime.streams import StreamSpec

WEBHOOKS: Final = StreamSpec(
    name=subjects.STREAM_WEBHOOKS,
    subjects=(subjects.WEBHOOKS_ALL,),
    max_age=timedelta(days=7),
    duplicate_window=timedelta(minutes=2),
    description="One message per accepted W-API webhook (written by ingest)",
)
HEALTH: Final = StreamSpec(
    name=subjects.STREAM_HEALTH,
    subjects=(subjects.HEALTH_ALL,),
    max_age=timedelta(days=7),
    duplicate_window=timedelta(minutes=2),
    description="Instance state, notifications and observations",
)
INGEST_STREAMS: Final = (WEBHOOKS, HEALTH)
