"""Outbound webhook POSTs over httpx (one pooled client for the process)."""

from __future__ import annotations

import httpx


class HttpxPoster:
    """`WebhookPoster`: POST with a timeout; None when the receiver did not answer."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        try:
            response = await self._client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
        except httpx.HTTPError:
            return None
        return response.status_code
