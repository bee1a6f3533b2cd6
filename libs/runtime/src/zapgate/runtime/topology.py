"""Every JetStream stream zapgate uses, declared once.

Each service ensures the whole topology at startup (`ensure_streams(nc, ALL_STREAMS)`); the
call is idempotent, so the order in which services start does not matter.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Final

from zapgate.contracts import subjects
from zapgate.runtime.streams import StreamSpec

WEBHOOKS: Final = StreamSpec(
    name=subjects.STREAM_WEBHOOKS,
    subjects=(subjects.WEBHOOKS_ALL,),
    max_age=timedelta(days=7),
    # The provider resends; the database copy dedupes beyond this window.
    duplicate_window=timedelta(minutes=10),
    description="One typed event per accepted W-API webhook",
)

HEALTH: Final = StreamSpec(
    name=subjects.STREAM_HEALTH,
    subjects=(subjects.HEALTH_ALL,),
    max_age=timedelta(days=7),
    description="Instance state changes, notifications and observations sent to health",
)

TICKS: Final = StreamSpec(
    name=subjects.STREAM_TICKS,
    subjects=("zg.tick.>", "zg.schedule.>"),  # HEALTH_TICK and HEALTH_TICK_SCHEDULE
    # No max_age: it would expire the schedule message itself and ticks would stop. Each
    # subject keeps its newest messages only, which bounds the tick history instead.
    max_msgs_per_subject=1000,
    allow_msg_schedules=True,
    description="Ticks published by the NATS server from message schedules",
)

SEND: Final = StreamSpec(
    name=subjects.STREAM_SEND,
    subjects=("zg.send.>",),
    max_age=timedelta(days=30),
    duplicate_window=timedelta(minutes=10),
    description="Send commands, outcomes, delivery tracking and alerts",
)

ALL_STREAMS: Final = (WEBHOOKS, HEALTH, TICKS, SEND)


def all_streams(replicas: int = 1) -> tuple[StreamSpec, ...]:
    """The topology with `replicas` copies of every stream (3 on a three-node cluster)."""
    return tuple(replace(spec, replicas=replicas) for spec in ALL_STREAMS)
