"""Time as a dependency: logic that depends on time takes a `Clock`; tests move a `ManualClock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time (aware UTC) and a monotonic reading for durations."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to; `advance` moves both readings together."""

    def __init__(self, start: datetime | None = None, monotonic_start: float = 0.0) -> None:
        self._now = _aware_utc(start or datetime(2025, 1, 1, tzinfo=UTC))
        self._monotonic = monotonic_start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, delta: timedelta | float) -> None:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards; use set() for wall-clock jumps")
        self._now += step
        self._monotonic += step.total_seconds()

    def set(self, now: datetime) -> None:
        """Jump the wall clock (as NTP may); the monotonic reading is unaffected."""
        self._now = _aware_utc(now)


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("ManualClock needs an aware datetime")
    return value.astimezone(UTC)
