"""Use cases of the HTTP API: authenticate, rate-limit, send, follow, retry, cancel, read health.

Plain async code over the ports; routes call these and turn a `Refusal` into an HTTP answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
from aiolimiter import AsyncLimiter

from zapgate.api.domain import (
    API_MESSAGES_PT_BR,
    ApiErrorCode,
    ApiKey,
    Caller,
    command_id_for,
    fingerprint,
    key_id_of,
    new_key,
    owns,
)
from zapgate.api.models import Message, MessageState
from zapgate.api.ports import BusUnavailableError, StoredRequest
from zapgate.contracts.errors import ErrorCode, Problem
from zapgate.contracts.health import InstanceHealth
from zapgate.contracts.sending import SendMessage, SendOutcome, SendOutcomeReply, StatusTime

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from pwdlib import PasswordHash

    from zapgate.api.models import SendOptions
    from zapgate.api.ports import HealthGateway, KeyStore, RequestLog, SenderGateway
    from zapgate.contracts.sending import MessageKind
    from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.api")
_CACHE_LIMIT = 10_000


class RefusalKind(StrEnum):
    """Why a request is refused; routes map each kind to one HTTP status."""

    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNPROCESSABLE = "unprocessable"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


class Refusal(Exception):  # noqa: N818 - a refusal is an answer, not an error of ours
    """A coded refusal: `code` is stable, `message` pt-BR, `retry_after` in seconds."""

    def __init__(
        self,
        kind: RefusalKind,
        problem: Problem,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(problem.code)
        self.kind = kind
        self.problem = problem
        self.retry_after = retry_after

    @classmethod
    def of(
        cls,
        kind: RefusalKind,
        code: ApiErrorCode,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> Refusal:
        problem = Problem(code=code.value, message=API_MESSAGES_PT_BR[code], detail=detail)
        return cls(kind, problem, retry_after=retry_after)


_SENDER_REFUSALS: dict[str, RefusalKind] = {
    ErrorCode.NOT_FOUND.value: RefusalKind.NOT_FOUND,
    ErrorCode.NOT_RETRYABLE.value: RefusalKind.CONFLICT,
    ErrorCode.NOT_CANCELLABLE.value: RefusalKind.CONFLICT,
    ErrorCode.INVALID_COMMAND.value: RefusalKind.UNPROCESSABLE,
    ErrorCode.INSTANCE_UNKNOWN.value: RefusalKind.NOT_FOUND,
    ErrorCode.INTERNAL.value: RefusalKind.UNAVAILABLE,
}


def _sender_refusal(problem: Problem | None) -> Refusal:
    problem = problem or Problem.of(ErrorCode.INTERNAL, "no answer")
    kind = _SENDER_REFUSALS.get(problem.code, RefusalKind.CONFLICT)
    return Refusal(kind, problem, retry_after=1.0 if kind is RefusalKind.UNAVAILABLE else None)


# --- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    token: str


class Authenticator:
    """Turns a presented bearer token into a Caller.

    Argon2 verification is deliberately slow, so it runs in a worker thread and a success is
    remembered for `cache_ttl` seconds under the token's SHA-256 (never the token itself);
    a revoked key stops working within that time.
    """

    def __init__(
        self, keys: KeyStore, hasher: PasswordHash, clock: Clock, *, cache_ttl: float
    ) -> None:
        self._keys = keys
        self._hasher = hasher
        self._clock = clock
        self._cache_ttl = cache_ttl
        self._verified: dict[str, tuple[Caller, float]] = {}

    async def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise Refusal.of(RefusalKind.UNAUTHORIZED, ApiErrorCode.AUTH_MISSING)
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._verified.get(digest)
        now = self._clock.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        key_id = key_id_of(token)
        key = await self._keys.get(key_id) if key_id is not None else None
        valid = (
            key is not None
            and not key.revoked
            and await asyncio.to_thread(self._hasher.verify, token, key.secret_hash)
        )
        if not valid or key is None:
            _log.info("api_key_refused", key_id=key_id, known=key is not None)
            raise Refusal.of(RefusalKind.UNAUTHORIZED, ApiErrorCode.AUTH_INVALID)
        caller = Caller(key_id=key.key_id, name=key.name, instances=key.instances)
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[digest] = (caller, now + self._cache_ttl)
        return caller

    async def create_key(self, name: str, instances: Iterable[str]) -> CreatedKey:
        """Make a key scoped to `instances` (`*` = all); the token is returned once, only here."""
        made = new_key()
        secret_hash = await asyncio.to_thread(self._hasher.hash, made.token)
        key = ApiKey(
            key_id=made.key_id,
            name=name,
            instances=frozenset(instances),
            secret_hash=secret_hash,
        )
        await self._keys.add(key, self._clock.now())
        _log.info("api_key_created", key_id=key.key_id, name=name, instances=sorted(key.instances))
        return CreatedKey(key=key, token=made.token)


@dataclass
class RateLimits:
    """A leaky bucket per API key: `requests` per `period` seconds."""

    requests: float
    period: float
    _buckets: dict[str, AsyncLimiter] = field(default_factory=dict)

    async def admit(self, key_id: str) -> None:
        """Take one request from the key's bucket, or raise a RATE_LIMITED refusal."""
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = AsyncLimiter(self.requests, self.period)
        if not bucket.has_capacity():
            retry_after = max(1, math.ceil(self.period / self.requests))
            _log.info("api_rate_limited", key_id=key_id, retry_after_s=retry_after)
            raise Refusal.of(
                RefusalKind.RATE_LIMITED, ApiErrorCode.RATE_LIMITED, retry_after=retry_after
            )
        await bucket.acquire()


# --- messages -----------------------------------------------------------------------------------


def status_url(command_id: str) -> str:
    return f"/v1/messages/{command_id}"


def _message(command_id: str, reply: SendOutcomeReply | None = None) -> Message:
    outcome = reply.outcome if reply is not None else None
    return _from_outcome(command_id, outcome, reply.timeline if reply is not None else [])


def _from_outcome(
    command_id: str, outcome: SendOutcome | None, timeline: list[StatusTime] | None = None
) -> Message:
    state: MessageState = outcome.status.value if outcome is not None else "accepted"
    return Message.model_validate(
        {
            "command_id": command_id,
            "status": state,
            "status_url": status_url(command_id),
            "outcome": outcome,
            "timeline": timeline or [],
        }
    )


@dataclass(frozen=True, slots=True)
class Sent:
    """What a send answered: `final` when the outcome is a decision (not accepted or held)."""

    message: Message
    final: bool


class ApiService:
    """The API's use cases over the sender, health and the API's own tables."""

    def __init__(
        self,
        sender: SenderGateway,
        health: HealthGateway,
        requests: RequestLog,
        clock: Clock,
    ) -> None:
        self._sender = sender
        self._health = health
        self._requests = requests
        self._clock = clock

    async def send(  # noqa: PLR0913 - the request's parts, each named
        self,
        caller: Caller,
        instance_id: str,
        kind: MessageKind,
        body: SendOptions,
        *,
        idempotency_key: str,
        wait: float,
    ) -> Sent:
        """Store the command once per (key, idempotency key) and hand it to the sender.

        Refusals: INSTANCE_FORBIDDEN, IDEMPOTENCY_KEY_REUSED (same key, other body),
        UNAVAILABLE (NATS did not take it: repeat with the same key).
        """
        if not caller.may_use(instance_id):
            raise Refusal.of(RefusalKind.FORBIDDEN, ApiErrorCode.INSTANCE_FORBIDDEN, instance_id)
        command_id = command_id_for(caller.key_id, idempotency_key)
        request = StoredRequest(
            command_id=command_id,
            key_id=caller.key_id,
            instance_id=instance_id,
            fingerprint=fingerprint(
                {"instance_id": instance_id, "kind": kind.value, **body.model_dump(mode="json")}
            ),
        )
        await self._claim_key(request)
        command = SendMessage(
            command_id=command_id,
            instance_id=instance_id,
            phone=body.phone,
            body=body.content(),
            quoted_message_id=body.quoted_message_id,
            delay_message=body.delay_message,
            hold_for=body.hold_for,
            correlation_id=command_id,
        )
        try:
            if wait <= 0:
                await self._sender.submit(command)
                outcome = None
            else:
                outcome = await self._sender.send_and_wait(command, wait)
        except BusUnavailableError as error:
            raise Refusal.of(
                RefusalKind.UNAVAILABLE, ApiErrorCode.UNAVAILABLE, str(error), retry_after=1
            ) from error
        _log.info(
            "api_send",
            key_id=caller.key_id,
            command_id=command_id,
            instance_id=instance_id,
            kind=kind.value,
            waited_s=wait,
            status=outcome.status.value if outcome is not None else "accepted",
        )
        final = outcome is not None and outcome.status.is_final_decision
        return Sent(_from_outcome(command_id, outcome), final=final)

    async def get_message(self, caller: Caller, command_id: str) -> Message:
        """The outcome and timeline of one of the caller's commands (NOT_FOUND otherwise)."""
        await self._own(caller, command_id)
        reply = await self._ask(self._sender.outcome(command_id))
        if not reply.ok:
            if reply.error is not None and reply.error.code == ErrorCode.NOT_FOUND.value:
                # Accepted by the API and stored in JetStream, not decided by the sender yet.
                return _message(command_id)
            raise _sender_refusal(reply.error)
        return _message(command_id, reply)

    async def retry(self, caller: Caller, command_id: str, idempotency_key: str) -> Message:
        """Retry a failed command as a new one named by the caller's idempotency key."""
        original = await self._own(caller, command_id)
        new_command_id = command_id_for(caller.key_id, idempotency_key)
        await self._claim_key(
            StoredRequest(
                command_id=new_command_id,
                key_id=caller.key_id,
                instance_id=original.instance_id,
                fingerprint=fingerprint({"retry_of": command_id}),
            )
        )
        reply = await self._ask(self._sender.retry(command_id, new_command_id))
        if not reply.ok:
            raise _sender_refusal(reply.error)
        _log.info("api_retry", key_id=caller.key_id, command_id=command_id, new=new_command_id)
        return _message(new_command_id, reply)

    async def cancel(self, caller: Caller, command_id: str) -> Message:
        """Cancel one of the caller's held commands (NOT_CANCELLABLE once decided)."""
        await self._own(caller, command_id)
        reply = await self._ask(self._sender.cancel(command_id))
        if not reply.ok:
            raise _sender_refusal(reply.error)
        _log.info("api_cancel", key_id=caller.key_id, command_id=command_id)
        return _message(command_id, reply)

    async def instances(self, caller: Caller) -> list[InstanceHealth]:
        """Health of every instance the caller's key may use."""
        reply = await self._ask_health(None)
        return [item for item in reply if caller.may_use(item.instance_id)]

    async def instance(self, caller: Caller, instance_id: str) -> InstanceHealth:
        if not caller.may_use(instance_id):
            raise Refusal.of(RefusalKind.FORBIDDEN, ApiErrorCode.INSTANCE_FORBIDDEN, instance_id)
        found = await self._ask_health(instance_id)
        if not found:
            raise Refusal(RefusalKind.NOT_FOUND, Problem.of(ErrorCode.INSTANCE_UNKNOWN))
        return found[0]

    async def _ask_health(self, instance_id: str | None) -> list[InstanceHealth]:
        try:
            reply = await self._health.health(instance_id)
        except BusUnavailableError as error:
            raise Refusal.of(
                RefusalKind.UNAVAILABLE, ApiErrorCode.UNAVAILABLE, str(error), retry_after=1
            ) from error
        if reply.ok:
            return reply.instances
        if reply.error is not None and reply.error.code == ErrorCode.INSTANCE_UNKNOWN.value:
            return []
        raise _sender_refusal(reply.error)

    async def _claim_key(self, request: StoredRequest) -> None:
        stored = await self._requests.remember(request, self._clock.now())
        if stored.fingerprint != request.fingerprint or stored.key_id != request.key_id:
            _log.info(
                "api_idempotency_key_reused", key_id=request.key_id, command_id=request.command_id
            )
            raise Refusal.of(
                RefusalKind.UNPROCESSABLE, ApiErrorCode.IDEMPOTENCY_KEY_REUSED, request.command_id
            )

    async def _own(self, caller: Caller, command_id: str) -> StoredRequest:
        stored = (
            await self._requests.find(caller.key_id, command_id)
            if owns(caller.key_id, command_id)
            else None
        )
        if stored is None:
            # Another caller's command reads exactly like a missing one: nothing leaks.
            raise Refusal.of(RefusalKind.NOT_FOUND, ApiErrorCode.NOT_FOUND, command_id)
        return stored

    @staticmethod
    async def _ask(pending: Awaitable[SendOutcomeReply]) -> SendOutcomeReply:
        try:
            return await pending
        except BusUnavailableError as error:
            raise Refusal.of(
                RefusalKind.UNAVAILABLE, ApiErrorCode.UNAVAILABLE, str(error), retry_after=1
            ) from error
