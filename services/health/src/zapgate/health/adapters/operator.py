"""The operator's webhook URL: each notice POSTed as JSON, signed per Standard Webhooks.

Headers: `webhook-id` (the notice's event id: the same on every retry, so the receiver
dedupes), `webhook-timestamp`, `webhook-signature` (see `zapgate.runtime.signing`), plus
`Idempotency-Key` (= webhook-id) for receivers that know that header instead.
In-process retries with exponential backoff (tenacity, waiting on the injected `Timer`) cover a
receiver that blips; the service schedules later rounds from the stored attempt count.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from zapgate.contracts.health import InstanceNotification
from zapgate.health.ports import NoticeDelivery, Timer
from zapgate.runtime import signing
from zapgate.runtime.clock import Clock

_log = structlog.get_logger("zapgate.health.operator")


def url_target(url: str) -> str:
    """A stable, non-secret name for an operator URL (the URL may carry a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class _RetryableResponseError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class SignedOperatorWebhook:
    """`OperatorChannel` over httpx: 2xx is delivered; transport errors, 408, 429 and 5xx are
    retried (`attempts` per round, backoff from `backoff` doubling up to 30 s); other 4xx are
    final for the round."""

    def __init__(  # noqa: PLR0913 - the channel's collaborators, keyword-only
        self,
        *,
        url: str,
        secret: str,
        http: httpx.AsyncClient,
        clock: Clock,
        timer: Timer,
        attempts: int = 3,
        backoff: timedelta = timedelta(seconds=0.5),
    ) -> None:
        self._url = url
        self._secret = signing.check_secret(secret)
        self._http = http
        self._clock = clock
        self._timer = timer
        self._attempts = attempts
        self._backoff = backoff
        self.target = url_target(url)

    async def deliver(self, notification: InstanceNotification) -> NoticeDelivery:
        body = notification.model_dump_json().encode()
        msg_id = str(notification.event_id)
        made = 0

        async def sleep(seconds: float) -> None:
            await self._timer.sleep(timedelta(seconds=seconds))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff.total_seconds(), max=30),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableResponseError)),
            sleep=sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    made += 1
                    status = await self._post(msg_id, body)
        except RetryError as exc:
            error = _describe(exc.last_attempt.exception())
            _log.warning(
                "operator_notice_not_delivered",
                instance_id=notification.instance_id,
                notification_id=msg_id,
                attempts=made,
                why=error,
            )
            return NoticeDelivery(delivered=False, attempts=made, error=error)
        if 200 <= status < 300:  # noqa: PLR2004 - HTTP success range
            _log.info(
                "operator_notice_delivered",
                instance_id=notification.instance_id,
                notification_id=msg_id,
                kind=notification.kind.value,
                attempts=made,
            )
            return NoticeDelivery(delivered=True, attempts=made)
        _log.warning(
            "operator_notice_refused",
            instance_id=notification.instance_id,
            notification_id=msg_id,
            why=f"HTTP {status}",
        )
        return NoticeDelivery(delivered=False, attempts=made, error=f"HTTP {status}")

    async def _post(self, msg_id: str, body: bytes) -> int:
        headers = signing.sign(self._secret, msg_id=msg_id, timestamp=self._clock.now(), body=body)
        headers["Idempotency-Key"] = msg_id
        headers["Content-Type"] = "application/json"
        response = await self._http.post(self._url, content=body, headers=headers)
        if response.status_code in _RETRYABLE or response.status_code >= 500:  # noqa: PLR2004
            raise _RetryableResponseError(response.status_code)
        return response.status_code


_RETRYABLE = frozenset({408, 425, 429})


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _RetryableResponseError):
        return str(error)
    return type(error).__name__ if error is not None else "unknown"
