"""`Provider` over the W-API client: one send call per body kind, and the live session check."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import SecretStr

from zapgate.contracts.sending import (
    AudioContent,
    ImageContent,
    MessageBody,
    TextContent,
    VideoContent,
)
from zapgate.sender.domain import InstanceView, LiveSession
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import ProviderFailure

if TYPE_CHECKING:
    from datetime import timedelta

    from zapgate.wapi.port import WapiPort
    from zapgate.wapi.results import SendAccepted


def _credentials(instance: InstanceView) -> InstanceCredentials:
    return InstanceCredentials(instance_id=instance.instance_id, token=SecretStr(instance.token))


class WapiProvider:
    """`Provider` over a `WapiPort`; `live_check_timeout` bounds the two calls of `observe`."""

    def __init__(self, wapi: WapiPort, *, live_check_timeout: timedelta) -> None:
        self.wapi = wapi
        self._live_check_timeout = live_check_timeout.total_seconds()

    async def send(
        self,
        instance: InstanceView,
        phone: str,
        body: MessageBody,
        *,
        quoted_message_id: str | None,
        delay_message: int | None,
    ) -> SendAccepted | ProviderFailure:
        credentials = _credentials(instance)
        quoted, delay = quoted_message_id, delay_message
        wapi = self.wapi
        if isinstance(body, TextContent):
            return await wapi.send_text(
                credentials, phone, body.message, quoted_message_id=quoted, delay_message=delay
            )
        if isinstance(body, ImageContent):
            return await wapi.send_image(
                credentials,
                phone,
                body.image,
                caption=body.caption,
                quoted_message_id=quoted,
                delay_message=delay,
            )
        if isinstance(body, AudioContent):
            return await wapi.send_audio(
                credentials, phone, body.audio, quoted_message_id=quoted, delay_message=delay
            )
        if isinstance(body, VideoContent):
            return await wapi.send_video(
                credentials,
                phone,
                body.video,
                caption=body.caption,
                quoted_message_id=quoted,
                delay_message=delay,
            )
        return await wapi.send_document(
            credentials,
            phone,
            body.document,
            body.extension,
            file_name=body.file_name,
            caption=body.caption,
            quoted_message_id=quoted,
            delay_message=delay,
        )

    async def observe(self, instance: InstanceView) -> LiveSession:
        credentials = _credentials(instance)
        try:
            async with asyncio.timeout(self._live_check_timeout):
                status = await self.wapi.status_instance(credentials)
                if isinstance(status, ProviderFailure):
                    return LiveSession(reachable=False)
                if not status.connected:
                    return LiveSession(reachable=True, connected=False)
                # status-instance never carries the phone: only fetch-instance proves completeness.
                details = await self.wapi.fetch_instance(credentials)
        except TimeoutError:
            return LiveSession(reachable=False)
        if isinstance(details, ProviderFailure):
            return LiveSession(reachable=False)
        connected = details.connected if details.connected is not None else True
        return LiveSession(reachable=True, connected=connected, phone=details.connected_phone)
