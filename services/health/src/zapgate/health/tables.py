"""Health's tables: the instance registry and state, its transition history, its notifications,
and the dead letters of its consumers.

Health is the only writer and the only reader of these tables. What the sender may know of an
instance is the view `instance_gate_view` (migration 0002, snapshot in tests/test_migrations.py):
its columns are the contract, `instances` itself is private to health.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from zapgate.contracts.health import InstanceState
from zapgate.runtime.dead_letters import dead_letter_table

metadata = SQLModel.metadata

_TZ = sa.DateTime(timezone=True)


def _identity() -> sa.Column[int]:
    return sa.Column(sa.BigInteger, sa.Identity(), primary_key=True)


def _ts(*, nullable: bool = True, index: bool = False) -> sa.Column[datetime]:
    return sa.Column(_TZ, nullable=nullable, index=index)


class Instance(SQLModel, table=True):
    """One W-API instance: registry entry and current state (one row per instance)."""

    __tablename__ = "instances"

    instance_id: str = Field(primary_key=True, max_length=100)
    display_name: str
    # The provider token: a secret. Never logged, never returned by listings.
    token: str
    managed: bool = True
    paused: bool = False
    state: str = Field(default=InstanceState.UNKNOWN.value)
    reason: str | None = None
    phone: str | None = None
    phone_observed_at: datetime | None = Field(default=None, sa_column=_ts())
    since: datetime | None = Field(default=None, sa_column=_ts())
    state_observed_at: datetime | None = Field(default=None, sa_column=_ts())
    last_check_at: datetime | None = Field(default=None, sa_column=_ts())
    last_restart_attempt_at: datetime | None = Field(default=None, sa_column=_ts())
    outage_started_at: datetime | None = Field(default=None, sa_column=_ts())
    outage_notified: bool = False
    good_since: datetime | None = Field(default=None, sa_column=_ts())
    episode_flaps: int = 0
    instability_notified: bool = False
    blip_count: int = 0
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    updated_at: datetime = Field(sa_column=_ts(nullable=False))


class InstanceTransition(SQLModel, table=True):
    """One state change; also the outbox of `InstanceStateChanged` (`published_at` null)."""

    __tablename__ = "instance_transitions"

    id: int | None = Field(default=None, sa_column=_identity())
    event_id: str = Field(max_length=36, unique=True)
    instance_id: str = Field(index=True, max_length=100)
    from_state: str
    from_reason: str | None = None
    to_state: str
    reason: str | None = None
    source: str
    phone: str | None = None
    observed_at: datetime = Field(sa_column=_ts(nullable=False))
    recorded_at: datetime = Field(sa_column=_ts(nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=_ts())


class InstanceNotificationRow(SQLModel, table=True):
    """One notice of an outage episode; the outbox of `InstanceNotification` and of the
    operator webhook."""

    __tablename__ = "instance_notifications"

    id: int | None = Field(default=None, sa_column=_identity())
    event_id: str = Field(max_length=36, unique=True)
    instance_id: str = Field(index=True, max_length=100)
    kind: str
    state: str
    reason: str | None = None
    since: datetime = Field(sa_column=_ts(nullable=False))
    text: str
    flaps: int = 0
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=_ts())
    webhook_target: str | None = Field(default=None, max_length=64)
    """Hash of the operator URL configured when the notice was created (None: never sent)."""
    webhook_claimed_until: datetime | None = Field(default=None, sa_column=_ts())
    webhook_next_attempt_at: datetime | None = Field(default=None, sa_column=_ts())
    webhook_delivered_at: datetime | None = Field(default=None, sa_column=_ts())
    webhook_attempts: int = 0


# Messages health's consumers gave up on (failure ledger + dead letters), kept by the runtime's
# pull consumer with their reason (`zapgate.runtime.dead_letters`, migration 0004).
dead_letters = dead_letter_table(metadata, "health_dead_letters")
