"""Delivery of notifications to an operator webhook URL (optional), with retries."""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx
import structlog

from zapgate.contracts.health import InstanceNotification

_log = structlog.get_logger("zapgate.health.notify")


class OperatorChannel(Protocol):
    """Where notifications go besides the event stream."""

    async def deliver(self, notification: InstanceNotification) -> tuple[bool, int]:
        """Try to deliver; return (delivered, attempts made)."""
        ...


class OperatorWebhook:
    """POSTs each notification as JSON; 2xx is delivered, anything else is retried."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self._url = url
        self._http = http
        self._attempts = attempts
        self._backoff_s = backoff_s

    async def deliver(self, notification: InstanceNotification) -> tuple[bool, int]:
        body = notification.model_dump(mode="json")
        last_error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._http.post(
                    self._url, json=body, headers={"Idempotency-Key": str(notification.event_id)}
                )
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
            else:
                if response.is_success:
                    return True, attempt
                last_error = f"HTTP {response.status_code}"
            if attempt < self._attempts and self._backoff_s > 0:
                # Spacing between retries (not synchronisation): the receiver may be restarting.
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        _log.warning(
            "operator webhook delivery failed",
            instance_id=notification.instance_id,
            notification_id=str(notification.event_id),
            attempts=self._attempts,
            error=last_error,
        )
        return False, self._attempts
