"""Outbound webhook POSTs over httpx (one pooled client for the process)."""

from __future__ import annotations

import httpx
import structlog

from zapgate.api.adapters.destinations import refused_by_guard

_log = structlog.get_logger("zapgate.api")


class HttpxPoster:
    """`WebhookPoster`: POST with a timeout; None when the receiver did not answer."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        try:
            response = await self._client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
        except httpx.HTTPError as exc:
            refused = refused_by_guard(exc)
            if refused is not None:
                # The host now resolves to an internal address (it passed at creation).
                _log.warning(
                    "webhook_destination_refused", code=refused.code, reason=refused.reason
                )
            return None
        return response.status_code
