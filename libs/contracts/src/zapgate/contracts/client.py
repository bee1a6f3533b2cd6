"""The typed client other systems use to send WhatsApp messages through zapgate."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError

from zapgate.contracts import subjects
from zapgate.contracts.sending import (
    CancelSend,
    GetSendOutcome,
    RetrySend,
    SendMessage,
    SendOutcome,
    SendOutcomeReply,
    SendStatus,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.subscription import Subscription

_PUBLISH_ATTEMPTS = 3


class SendTimeoutError(TimeoutError):
    """No final outcome within the timeout. The command is durable: ask `outcome()` later."""

    def __init__(self, command_id: str, last_seen: SendOutcome | None) -> None:
        super().__init__(f"no final outcome for command {command_id!r} in time")
        self.command_id = command_id
        self.last_seen = last_seen


class CommandNotAcceptedError(RuntimeError):
    """The command could not be stored in JetStream (NATS unreachable or stream missing)."""


class NatsUnreachableError(ConnectionError):
    """No NATS connection within the stated timeout (refused, unknown host, auth, TLS)."""

    def __init__(self, url: str, timeout: float, reason: str) -> None:
        super().__init__(f"NATS at {url} not reachable within {timeout:g} s: {reason}")
        self.url = url
        self.timeout = timeout
        self.reason = reason


async def _ignore_connect_error(_error: Exception) -> None:
    """`connect_once` reports the failure itself, as `NatsUnreachableError`."""


async def connect_once(url: str, *, timeout: float = 5.0, **options: Any) -> NatsClient:  # noqa: ANN401
    """Connect for a short-lived caller (a CLI): one try, bounded by `timeout` seconds.

    nats-py's defaults retry the first connect for about two minutes, and
    `max_reconnect_attempts=0` retries for ever; a command-line tool must give up and say so.
    Raises `NatsUnreachableError` (never a raw nats-py or socket error). nats-py's default
    `error_cb` logs each failed try with its traceback (to stderr when the caller has not set up
    logging); the error is raised here anyway, so unless the caller passes its own `error_cb`
    nothing is logged.
    """
    options.setdefault("error_cb", _ignore_connect_error)
    try:
        async with asyncio.timeout(timeout):
            return await nats.connect(
                url,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                **options,
            )
    except TimeoutError as error:
        raise NatsUnreachableError(url, timeout, "timed out") from error
    except Exception as error:
        raise NatsUnreachableError(url, timeout, f"{type(error).__name__}: {error}") from error


class SenderClient:
    """Publish send commands to JetStream and await their outcomes.

    The command is published with `Nats-Msg-Id = command_id`, so resending the same command
    (after a timeout, a crash, a retry loop) never makes a second send: the sender answers
    with the original outcome.
    """

    def __init__(self, nc: NatsClient, *, publish_timeout: float = 2.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self._publish_timeout = publish_timeout

    async def send(
        self, command: SendMessage, *, timeout: float = 30.0, wait_while_held: bool = True
    ) -> SendOutcome:
        """Send `command` and return its outcome.

        With `wait_while_held` a `held` outcome is not returned: the call keeps waiting for
        the final one (sent, failed, uncertain) until `timeout`.
        """
        subscription = await self._nc.subscribe(subjects.send_outcome_subject(command.command_id))
        try:
            duplicate = await self._publish(command)
            if duplicate:
                stored = await self.outcome(command.command_id)
                if stored is not None and self._is_answer(stored, wait_while_held=wait_while_held):
                    return stored
            return await self._await_outcome(
                subscription, command.command_id, timeout, wait_while_held=wait_while_held
            )
        finally:
            await subscription.unsubscribe()

    async def submit(self, command: SendMessage) -> bool:
        """Store `command` in JetStream without waiting for its outcome (follow it with
        `outcome()` or the outcome subject). True when the stream already held it (a repeat
        inside the duplicate window). Raises CommandNotAcceptedError when it was not stored."""
        return await self._publish(command)

    async def outcome(self, command_id: str, *, timeout: float = 2.0) -> SendOutcome | None:
        """The stored outcome of a command, or None when the sender has none (yet)."""
        request = GetSendOutcome(command_id=command_id)
        try:
            reply = await self._nc.request(
                subjects.API_SENDER_OUTCOME, request.model_dump_json().encode(), timeout=timeout
            )
        except (NoRespondersError, NatsTimeoutError):
            return None
        return SendOutcomeReply.model_validate_json(reply.data).outcome

    async def cancel(self, command_id: str, *, timeout: float = 5.0) -> SendOutcomeReply:
        """Cancel a held command: `ok` with the failed (`CANCELLED`) outcome, or a coded refusal
        (`NOT_CANCELLABLE` once decided, `NOT_FOUND`). Raises nats' TimeoutError or
        NoRespondersError when the sender does not answer."""
        request = CancelSend(command_id=command_id)
        reply = await self._nc.request(
            subjects.API_SENDER_CANCEL, request.model_dump_json().encode(), timeout=timeout
        )
        return SendOutcomeReply.model_validate_json(reply.data)

    async def retry(
        self, command_id: str, new_command_id: str, *, timeout: float = 30.0
    ) -> SendOutcome:
        """Retry a failed send as a new attempt; it goes through the preflight again."""
        subscription = await self._nc.subscribe(subjects.send_outcome_subject(new_command_id))
        try:
            request = RetrySend(command_id=command_id, new_command_id=new_command_id)
            reply = await self._nc.request(
                subjects.API_SENDER_RETRY, request.model_dump_json().encode(), timeout=timeout
            )
            answer = SendOutcomeReply.model_validate_json(reply.data)
            if not answer.ok or answer.outcome is None:
                detail = answer.error.message if answer.error else "retry refused"
                raise CommandNotAcceptedError(detail)
            if answer.outcome.status is not SendStatus.HELD:
                return answer.outcome
            return await self._await_outcome(
                subscription, new_command_id, timeout, wait_while_held=True
            )
        finally:
            await subscription.unsubscribe()

    async def _publish(self, command: SendMessage) -> bool:
        payload = command.model_dump_json().encode()
        headers = {subjects.MSG_ID_HEADER: command.command_id}
        last_error: Exception | None = None
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                ack = await self._js.publish(
                    subjects.send_command_subject(command.instance_id),
                    payload,
                    stream=subjects.STREAM_SEND,
                    headers=headers,
                    timeout=self._publish_timeout,
                )
            except (NatsTimeoutError, NoStreamResponseError) as error:
                # A publish that timed out may still have been stored: repeating it with the
                # same Nats-Msg-Id is safe, the stream keeps one copy.
                last_error = error
                continue
            return bool(ack.duplicate)
        raise CommandNotAcceptedError(f"command not stored: {last_error!r}")

    async def _await_outcome(
        self,
        subscription: Subscription,
        command_id: str,
        timeout: float,
        *,
        wait_while_held: bool,
    ) -> SendOutcome:
        last_seen: SendOutcome | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await subscription.next_msg(timeout=None)
                    outcome = SendOutcome.model_validate_json(message.data)
                    last_seen = outcome
                    if self._is_answer(outcome, wait_while_held=wait_while_held):
                        return outcome
        except TimeoutError as error:
            raise SendTimeoutError(command_id, last_seen) from error

    @staticmethod
    def _is_answer(outcome: SendOutcome, *, wait_while_held: bool) -> bool:
        return outcome.status.is_final_decision or not wait_while_held
