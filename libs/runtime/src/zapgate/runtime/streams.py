"""JetStream provisioning: declare streams idempotently and install server-side message schedules.

Message schedules (ADR-51, nats-server >= 2.12; zapgate requires 2.14): a message on a schedule
subject with `Nats-Schedule: @every <go duration>` and `Nats-Schedule-Target: <subject>` makes
the server store a copy of its body on the target subject (same stream) on that schedule. The
last message on the schedule subject is the schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nats.aio.client import Client
    from nats.js import JetStreamContext

SCHEDULE_HEADER = "Nats-Schedule"
SCHEDULE_TARGET_HEADER = "Nats-Schedule-Target"
_NANOS = 1_000_000_000


class StreamProvisioningError(RuntimeError):
    """The JetStream API refused a stream create or update."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a stream must look like; `ensure_streams` makes the server match it."""

    name: str
    subjects: tuple[str, ...]
    max_age: timedelta | None = None
    duplicate_window: timedelta = timedelta(minutes=2)
    allow_msg_schedules: bool = False
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_msgs_per_subject: int = -1
    allow_rollup_hdrs: bool = False
    description: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The `$JS.API.STREAM.CREATE/UPDATE` request body (durations in nanoseconds)."""
        body: dict[str, Any] = {
            "name": self.name,
            "subjects": list(self.subjects),
            "retention": "limits",
            "storage": self.storage,
            "num_replicas": self.replicas,
            "max_age": _nanos(self.max_age) if self.max_age else 0,
            "duplicate_window": _nanos(self.duplicate_window),
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "allow_rollup_hdrs": self.allow_rollup_hdrs,
            "discard": "old",
        }
        if self.allow_msg_schedules:
            body["allow_msg_schedules"] = True
        if self.description is not None:
            body["description"] = self.description
        return body


def go_duration(every: timedelta) -> str:
    """A Go `time.ParseDuration` string (what `@every` takes), e.g. `1s`, `300s`, `1500ms`."""
    millis = round(every.total_seconds() * 1000)
    if millis <= 0:
        raise ValueError("a schedule interval must be positive")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


async def ensure_streams(nc: Client, specs: Iterable[StreamSpec]) -> None:
    """Create each stream, or update it to the spec when it exists. Safe to run on every start."""
    for spec in specs:
        await _ensure_stream(nc, spec)


async def _ensure_stream(nc: Client, spec: StreamSpec) -> None:
    body = spec.to_api()
    # The raw API carries every field the server knows, whatever this nats-py's StreamConfig
    # has (allow_msg_schedules is missing from older clients).
    created = await _js_api(nc, f"STREAM.CREATE.{spec.name}", body)
    error = created.get("error")
    if error is None:
        return
    # 10058: a stream with this name exists with a different config: update it in place.
    if error.get("err_code") != 10058:  # noqa: PLR2004 - JSStreamNameExistErr
        raise StreamProvisioningError(f"create stream {spec.name}: {error}")
    updated = await _js_api(nc, f"STREAM.UPDATE.{spec.name}", body)
    if "error" in updated:
        raise StreamProvisioningError(f"update stream {spec.name}: {updated['error']}")


async def ensure_schedule(  # noqa: PLR0913 - all keyword-only, each names part of the schedule
    nc: Client,
    *,
    stream: str,
    schedule_subject: str,
    target_subject: str,
    every: timedelta,
    body: bytes = b"",
) -> bool:
    """Install `@every <every>` on `schedule_subject` producing on `target_subject`.

    Idempotent: when the last message on the schedule subject already holds the same schedule,
    nothing is published (republishing would restart the interval). Returns True if published.
    """
    headers = {
        SCHEDULE_HEADER: f"@every {go_duration(every)}",
        SCHEDULE_TARGET_HEADER: target_subject,
    }
    js: JetStreamContext = nc.jetstream()
    try:
        current = await js.get_last_msg(stream, schedule_subject)
    except NotFoundError:
        current = None
    if current is not None and current.data == body:
        current_headers = current.headers or {}
        if all(current_headers.get(key) == value for key, value in headers.items()):
            return False
    await js.publish(schedule_subject, body, stream=stream, headers=headers)
    return True


async def _js_api(nc: Client, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(f"$JS.API.{verb}", json.dumps(body).encode(), timeout=5)
    decoded: dict[str, Any] = json.loads(reply.data)
    return decoded


def _nanos(value: timedelta) -> int:
    return round(value.total_seconds() * _NANOS)
