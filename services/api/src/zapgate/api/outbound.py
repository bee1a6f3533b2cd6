"""Outbound events over HTTP: fan JetStream events out to subscriptions, deliver them signed.

Two steps, each from a durable JetStream consumer:
1. `fan_out`: an outcome, status change or received message becomes one delivery job per
   interested subscription, published to ZG_API_HOOKS with `Nats-Msg-Id = <sub>:<webhook id>`.
2. `deliver`: one POST per job, signed per Standard Webhooks (`zapgate.runtime.signing`); not
   2xx -> the job is nak'ed with the next delay of the schedule, until `retry_for` after its
   first attempt. The delivery row per (subscription, webhook id) dedupes beyond the stream's
   window: an event delivered once is never POSTed again.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog
from pydantic import BaseModel, ConfigDict

from zapgate.api.domain import EventType, OutboundEvent, Subscription, retry_delay, wants
from zapgate.contracts import subjects
from zapgate.contracts.sending import MessageStatusChanged, SendOutcome
from zapgate.contracts.webhooks import MessageReceived, WebhookKind
from zapgate.runtime.consumer import Postpone
from zapgate.runtime.signing import new_secret, sign

if TYPE_CHECKING:
    from zapgate.api.domain import Caller
    from zapgate.api.ports import (
        DeliveryLog,
        DestinationCheck,
        JobPublisher,
        SubscriptionStore,
        WebhookPoster,
    )
    from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.api")
RECEIVED_SUBJECT: Final = subjects.webhook_subject(WebhookKind.MESSAGE_RECEIVED.value)


class WebhookJob(BaseModel):
    """One event for one subscription, as stored in ZG_API_HOOKS."""

    model_config = ConfigDict(frozen=True)

    subscription_id: str
    webhook_id: str
    type: EventType
    instance_id: str | None = None
    command_id: str | None = None
    payload: dict[str, Any]

    def event(self) -> OutboundEvent:
        return OutboundEvent(
            webhook_id=self.webhook_id,
            type=self.type,
            instance_id=self.instance_id,
            command_id=self.command_id,
            payload=self.payload,
        )


def to_event(subject: str, data: bytes) -> OutboundEvent | None:
    """The outbound event of one bus message; None for what subscribers never get (replays).

    Webhook ids are stable per fact, so a republished outcome or a redelivered webhook keeps
    its id: `outcome-<command>-<status>`, `status-<command>-<status>`, `received-<sha256>`.
    """
    if subject.startswith("zg.send.outcome."):
        outcome = SendOutcome.model_validate_json(data)
        if outcome.replayed:
            return None
        return OutboundEvent(
            webhook_id=f"outcome-{outcome.command_id}-{outcome.status.value}",
            type=EventType.MESSAGE_OUTCOME,
            instance_id=outcome.instance_id,
            command_id=outcome.command_id,
            payload=outcome.model_dump(mode="json"),
        )
    if subject.startswith("zg.send.status."):
        change = MessageStatusChanged.model_validate_json(data)
        return OutboundEvent(
            webhook_id=f"status-{change.command_id}-{change.to_status.value}",
            type=EventType.MESSAGE_STATUS,
            instance_id=change.instance_id,
            command_id=change.command_id,
            payload=change.model_dump(mode="json"),
        )
    if subject == RECEIVED_SUBJECT:
        received = MessageReceived.model_validate_json(data)
        digest = hashlib.sha256(received.dedupe_key.encode()).hexdigest()[:40]
        return OutboundEvent(
            webhook_id=f"received-{digest}",
            type=EventType.MESSAGE_RECEIVED,
            instance_id=received.instance_id,
            command_id=None,
            payload=received.model_dump(mode="json", exclude={"raw"}),
        )
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    retry_for: timedelta


class Outbound:
    """The outbound-event use cases over their ports."""

    def __init__(  # noqa: PLR0913 - the ports, each named
        self,
        subscriptions: SubscriptionStore,
        deliveries: DeliveryLog,
        poster: WebhookPoster,
        *,
        jobs: JobPublisher,
        clock: Clock,
        policy: RetryPolicy,
        cache_ttl: float = 2.0,
    ) -> None:
        self._subscriptions = subscriptions
        self._deliveries = deliveries
        self._poster = poster
        self._jobs = jobs
        self._clock = clock
        self._policy = policy
        self._cache_ttl = cache_ttl
        self._cached: tuple[float, list[Subscription]] | None = None

    def forget_subscriptions(self) -> None:
        """Drop the cached list (a subscription was added or removed in this process)."""
        self._cached = None

    async def _active(self) -> list[Subscription]:
        now = self._clock.monotonic()
        if self._cached is not None and self._cached[0] > now:
            return self._cached[1]
        active = await self._subscriptions.active()
        self._cached = (now + self._cache_ttl, active)
        return active

    async def fan_out(self, subject: str, data: bytes) -> int:
        """Queue one job per interested subscription; how many were queued."""
        event = to_event(subject, data)
        if event is None:
            return 0
        targets = [sub for sub in await self._active() if wants(sub, event)]
        for subscription in targets:
            await self._jobs.publish_job(
                WebhookJob(
                    subscription_id=subscription.subscription_id,
                    webhook_id=event.webhook_id,
                    type=event.type,
                    instance_id=event.instance_id,
                    command_id=event.command_id,
                    payload=event.payload,
                )
            )
        return len(targets)

    async def deliver(self, job: WebhookJob) -> str:
        """POST one job. Returns `delivered`, `duplicate`, `removed` or `gave_up`; raises
        Postpone(next delay) while the receiver fails inside the retry window."""
        subscription = await self._subscriptions.get(job.subscription_id)
        if subscription is None:
            return "removed"
        now = self._clock.now()
        attempt = await self._deliveries.start(job.subscription_id, job.webhook_id, now)
        if attempt.delivered or attempt.gave_up:
            return "duplicate"
        body = job.event().body(now.isoformat())
        headers = sign(subscription.secret, msg_id=job.webhook_id, timestamp=now, body=body)
        status = await self._poster.post(subscription.url, body, headers)
        log = _log.bind(
            subscription_id=job.subscription_id,
            webhook_id=job.webhook_id,
            attempt=attempt.attempts,
            status=status,
        )
        if status is not None and 200 <= status < 300:  # noqa: PLR2004 - the 2xx range
            await self._deliveries.finish(
                job.subscription_id, job.webhook_id, delivered=True, status=status, now=now
            )
            log.info("webhook_delivered")
            return "delivered"
        if now - attempt.first_attempt_at >= self._policy.retry_for:
            await self._deliveries.finish(
                job.subscription_id, job.webhook_id, delivered=False, status=status, now=now
            )
            log.warning("webhook_gave_up", retried_for_s=self._policy.retry_for.total_seconds())
            return "gave_up"
        delay = retry_delay(attempt.attempts, self._policy.schedule)
        log.info("webhook_retry", delay_s=delay)
        raise Postpone(timedelta(seconds=delay), "webhook_receiver_failed")


class Subscriptions:
    """Create, list and remove one API key's webhook subscriptions."""

    def __init__(
        self,
        store: SubscriptionStore,
        clock: Clock,
        outbound: Outbound | None,
        destinations: DestinationCheck,
    ) -> None:
        self._store = store
        self._clock = clock
        self._outbound = outbound
        self._destinations = destinations

    async def create(self, caller: Caller, url: str, events: list[EventType]) -> Subscription:
        """Store a subscription with a new signing secret. The URL's host must resolve to
        public addresses only: `destinations.check` raises its coded refusal otherwise."""
        await self._destinations.check(url)
        subscription = Subscription(
            subscription_id=f"sub_{secrets.token_hex(8)}",
            key_id=caller.key_id,
            url=url,
            secret=new_secret(),
            events=frozenset(events),
        )
        await self._store.add(subscription, self._clock.now())
        self._changed()
        _log.info(
            "subscription_created",
            key_id=caller.key_id,
            subscription_id=subscription.subscription_id,
            events=sorted(subscription.events),
        )
        return subscription

    async def list_for(self, caller: Caller) -> list[Subscription]:
        return await self._store.of_key(caller.key_id)

    async def remove(self, caller: Caller, subscription_id: str) -> bool:
        removed = await self._store.remove(caller.key_id, subscription_id, self._clock.now())
        self._changed()
        return removed

    def _changed(self) -> None:
        if self._outbound is not None:
            self._outbound.forget_subscriptions()
