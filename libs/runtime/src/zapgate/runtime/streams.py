"""JetStream provisioning: declare streams and consumers idempotently; install message schedules.

Message schedules (ADR-51, nats-server >= 2.12; zapgate requires 2.14): a message on a schedule
subject with `Nats-Schedule: @every <go duration>` and `Nats-Schedule-Target: <subject>` makes
the server store a copy of its body on the target subject (same stream) on that schedule. The
last message on the schedule subject is the schedule.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from pydantic import BaseModel

SCHEDULE_HEADER = "Nats-Schedule"
SCHEDULE_TARGET_HEADER = "Nats-Schedule-Target"
_NANOS = 1_000_000_000
DEAD_LETTER_STREAM = "ZG_DEAD_LETTERS"
"""The stream that keeps a copy of every dead-lettered message (subjects `zg.deadletter.>`)."""
DEAD_LETTER_SUBJECT_PREFIX = "zg.deadletter"
_NAME = re.compile(r"[A-Za-z0-9_\-]+")


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
    subject_transform: tuple[str, str] | None = None
    """(source, destination) applied by the server to a message before it is stored, e.g. the
    send commands' partition mapping (`{{partition(n,1)}}`); other subjects are stored as is."""

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
        if self.subject_transform is not None:
            source, destination = self.subject_transform
            body["subject_transform"] = {"src": source, "dest": destination}
        if self.description is not None:
            body["description"] = self.description
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerSpec:
    """A durable pull consumer of one service, and what its loop does with failures.

    - `service`, `name`: the durable is `<prefix>-<name>` (`prefix` defaults to `service`;
      tests and side-by-side deployments set another one with `with_prefix`).
    - `filter_subjects`: one or more subjects of `stream` it reads; `message`: the contract
      model of those messages (None: raw bytes), used by the AsyncAPI documents.
    - `ack_wait`: time a delivery may stay unacknowledged before the server redelivers it.
    - `heartbeat`: while a delivery is handled, its loop sends `+WPI` this often (restarting
      the ack wait), so a short `ack_wait` bounds how soon a crashed process's messages come
      back, not how long a live handler may take. None: no heartbeat. Below `ack_wait`.
    - `max_failures`: failures *of the message itself* before it is dead-lettered (the
      runtime's own count; dependency outages and postponements never count).
    - `max_deliver`: the server's MaxDeliver, a backstop only. -1 (unlimited) by default,
      because JetStream counts every delivery, the ones nak'ed during a database outage too,
      and would silently stop delivering a good message.
    - dead-lettered copies go to `dead_letter_subject` (`zg.deadletter.<service>.<name>`) in
      `dead_letter_stream`.
    - `retry_delay` doubles per failure up to `max_retry_delay`; `dependency_delay` is the nak
      delay while a dependency is down.
    - `priority_group` declares a pinned priority group (`priority_policy: pinned_client`):
      one client at a time gets the messages; the pin moves to another client when the pinned
      one has not pulled for `priority_timeout` (see `zapgate.runtime.pinned`).
    - `parameters` name the `*` tokens of the filter subject in the AsyncAPI documents (e.g.
      `("instance_id",)`); `ordered=True` declares an ephemeral ordered consumer (a follower
      of the last state per subject, no durable, no dead letters: `PullConsumer` refuses it);
      `handler` names the operation in the AsyncAPI document (default `on_<name>`).
    """

    service: str
    name: str
    stream: str
    filter_subjects: tuple[str, ...]
    message: type[BaseModel] | None = None
    prefix: str | None = None
    ack_wait: timedelta = timedelta(seconds=30)
    heartbeat: timedelta | None = None
    max_failures: int = 5
    max_deliver: int = -1
    max_ack_pending: int = 1000
    retry_delay: timedelta = timedelta(seconds=1)
    max_retry_delay: timedelta = timedelta(minutes=1)
    dependency_delay: timedelta = timedelta(seconds=2)
    deliver_new_only: bool = False
    dead_letter_stream: str = DEAD_LETTER_STREAM
    description: str | None = None
    parameters: tuple[str, ...] = ()
    ordered: bool = False
    handler: str | None = None
    priority_group: str | None = None
    priority_timeout: timedelta = timedelta(seconds=15)

    def __post_init__(self) -> None:
        if not self.filter_subjects:
            raise ValueError(f"consumer {self.name} needs at least one filter subject")
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if self.heartbeat is not None and not timedelta(0) < self.heartbeat < self.ack_wait:
            raise ValueError(f"consumer {self.name}: heartbeat must be positive, below ack_wait")
        for part in (self.service, self.name, self.prefix or self.service):
            if not _NAME.fullmatch(part):
                raise ValueError(f"{part!r} is not a consumer name part ([A-Za-z0-9_-]+)")

    @property
    def durable(self) -> str:
        """The durable consumer's name on the server."""
        return f"{self.prefix or self.service}-{self.name}"

    @property
    def dead_letter_subject(self) -> str:
        """Where a dead-lettered copy of a message is published."""
        return f"{DEAD_LETTER_SUBJECT_PREFIX}.{self.service}.{self.name}"

    @property
    def operation(self) -> str:
        """The operation id in the service's AsyncAPI document: `handler`, else `on_<name>`."""
        return self.handler or "on_" + self.name.replace("-", "_")

    def with_prefix(self, prefix: str) -> ConsumerSpec:
        """The same consumer under the durable `<prefix>-<name>` (e.g. per test)."""
        return replace(self, prefix=prefix)

    def config(self) -> ConsumerConfig:
        """The nats-py consumer configuration (explicit acks, durable)."""
        several = len(self.filter_subjects) > 1
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if self.deliver_new_only else DeliverPolicy.ALL,
            ack_wait=self.ack_wait.total_seconds(),
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subject=None if several else self.filter_subjects[0],
            filter_subjects=list(self.filter_subjects) if several else None,
        )

    def to_api(self) -> dict[str, Any]:
        """The `$JS.API.CONSUMER.CREATE` config (durations in nanoseconds), with the priority
        group fields nats-py's `ConsumerConfig` does not have."""
        several = len(self.filter_subjects) > 1
        config: dict[str, Any] = {
            "durable_name": self.durable,
            "ack_policy": "explicit",
            "deliver_policy": "new" if self.deliver_new_only else "all",
            "ack_wait": _nanos(self.ack_wait),
            "max_deliver": self.max_deliver,
            "max_ack_pending": self.max_ack_pending,
        }
        if self.description is not None:
            config["description"] = self.description
        if several:
            config["filter_subjects"] = list(self.filter_subjects)
        else:
            config["filter_subject"] = self.filter_subjects[0]
        if self.priority_group is not None:
            config["priority_groups"] = [self.priority_group]
            config["priority_policy"] = "pinned_client"
            config["priority_timeout"] = _nanos(self.priority_timeout)
        return config

    def retry_delay_after(self, failures: int) -> timedelta:
        """The nak delay after the `failures`-th failure of a message (1, 2, 4, ... x delay)."""
        exponent = max(0, min(failures - 1, 30))
        return min(self.retry_delay * (1 << exponent), self.max_retry_delay)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicationSpec:
    """What a service publishes to a stream: the subject (with `*` for the `parameters`), the
    contract model, and why. The AsyncAPI documents are generated from these declarations."""

    service: str
    subject: str
    stream: str
    message: type[BaseModel] | None
    operation: str
    description: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSpec:
    """A request-reply verb a service answers (core NATS, queue group `queue`)."""

    service: str
    subject: str
    request: type[BaseModel]
    reply: type[BaseModel]
    queue: str
    operation: str
    description: str


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
    # Look first: a stream that already matches needs no create right, so services running as
    # their own NATS users (STREAM.INFO only) start against streams the admin provisioned.
    info = await _js_api(nc, f"STREAM.INFO.{spec.name}", {})
    if _config_matches(info.get("config"), body):
        return
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


async def ensure_replicas(nc: Client, stream: str, replicas: int) -> bool:
    """Move an existing stream that the topology does not declare (an object-store bucket's
    `OBJ_<bucket>`) to `replicas` copies, keeping the rest of its config. Returns True if it
    was changed, False if it already had them or does not exist (its owner creates it).
    Raises `StreamProvisioningError` if the server refuses the update."""
    info = await _js_api(nc, f"STREAM.INFO.{stream}", {})
    config = info.get("config")
    if config is None or config.get("num_replicas") == replicas:
        return False
    updated = await _js_api(nc, f"STREAM.UPDATE.{stream}", {**config, "num_replicas": replicas})
    if "error" in updated:
        raise StreamProvisioningError(f"update stream {stream}: {updated['error']}")
    return True


async def ensure_consumer(nc: Client, spec: ConsumerSpec) -> None:
    """Create the durable consumer, or update it to the spec. Safe to run on every start.
    Raises `StreamProvisioningError` when the server refuses a pinned consumer's config."""
    if spec.priority_group is None:
        await nc.jetstream().add_consumer(spec.stream, spec.config())
        return
    # Raw API: nats-py 2.16 has no priority groups. The durable's name is in the subject, so a
    # user may create only its own (`CONSUMER.CREATE.<stream>.<durable>`).
    body = {"stream_name": spec.stream, "config": spec.to_api(), "action": ""}
    reply = await _js_api(nc, f"CONSUMER.CREATE.{spec.stream}.{spec.durable}", body)
    if "error" in reply:
        raise StreamProvisioningError(f"consumer {spec.durable}: {reply['error']}")


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


def _config_matches(current: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    if current is None:
        return False
    for key, value in wanted.items():
        have = current.get(key)
        if key == "allow_rollup_hdrs" and wanted.get("allow_msg_schedules"):
            continue  # the server turns rollups on for a stream with message schedules
        if key == "subjects":
            if sorted(have or []) != sorted(value):
                return False
        elif have != value:
            return False
    return True


async def _js_api(nc: Client, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(f"$JS.API.{verb}", json.dumps(body).encode(), timeout=5)
    decoded: dict[str, Any] = json.loads(reply.data)
    return decoded


def _nanos(value: timedelta) -> int:
    return round(value.total_seconds() * _NANOS)
