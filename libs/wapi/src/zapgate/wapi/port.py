"""The W-API port: what services depend on, never the HTTP adapter itself.

Every call takes the instance's credentials (one adapter serves every instance) and returns a
typed value: the success type, or a `ProviderFailure`. Calls never raise for provider or
network trouble, so a caller cannot forget the failure path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zapgate.wapi.credentials import InstanceCredentials
    from zapgate.wapi.failures import ProviderFailure
    from zapgate.wapi.results import (
        Acknowledged,
        DeviceInfo,
        InstanceDetails,
        InstanceStatus,
        PairingCode,
        QrCode,
        Reachable,
        SendAccepted,
        WebhookLogs,
        WebhooksConfigured,
    )
    from zapgate.wapi.webhook_slots import WebhookSlot


class WapiPort(Protocol):
    """Every W-API call zapgate makes (see WAPI.md for the provider's behaviour)."""

    async def status_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceStatus | ProviderFailure:
        """`GET /instance/status-instance`: connected or not; never the phone."""
        ...

    async def fetch_instance(
        self, credentials: InstanceCredentials
    ) -> InstanceDetails | ProviderFailure:
        """`GET /instance/fetch-instance`: connection and `connectedPhone`."""
        ...

    async def device(self, credentials: InstanceCredentials) -> DeviceInfo | ProviderFailure:
        """`GET /instance/device`: the phone the session runs on."""
        ...

    async def restart(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        """`GET /instance/restart`."""
        ...

    async def disconnect(self, credentials: InstanceCredentials) -> Acknowledged | ProviderFailure:
        """`GET /instance/disconnect` (logs the session out)."""
        ...

    async def qr_code(self, credentials: InstanceCredentials) -> QrCode | ProviderFailure:
        """`GET /instance/qr-code?image=disable`: a data-URI, or `connected=True`."""
        ...

    async def pairing_code(
        self, credentials: InstanceCredentials, phone_number: str
    ) -> PairingCode | ProviderFailure:
        """`GET /instance/pairing-code?phoneNumber=...`."""
        ...

    async def update_webhook(
        self, credentials: InstanceCredentials, slot: WebhookSlot, url: str
    ) -> Acknowledged | ProviderFailure:
        """`PUT /webhook/update-webhook-<slot>` with `{"value": url}`."""
        ...

    async def configure_webhooks(
        self,
        credentials: InstanceCredentials,
        url: str,
        slots: Iterable[WebhookSlot] | None = None,
    ) -> WebhooksConfigured | ProviderFailure:
        """Point every slot (default: all six) at `url`; stops at the first failure."""
        ...

    async def fetch_webhook_logs(
        self, credentials: InstanceCredentials, *, per_page: int = 50, page: int = 1
    ) -> WebhookLogs | ProviderFailure:
        """`GET /webhook/fetch-webhook-logs` (grade C; answered raw)."""
        ...

    async def send_text(
        self,
        credentials: InstanceCredentials,
        phone: str,
        message: str,
        *,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        """`POST /message/send-text`. `phone`: digits with country code, `@g.us` or `@lid`."""
        ...

    async def send_image(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        image: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        """`POST /message/send-image`; `image` is a URL or a data-URI."""
        ...

    async def send_audio(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        audio: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        """`POST /message/send-audio`; `audio` is a URL or a data-URI."""
        ...

    async def send_video(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        video: str,
        *,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        """`POST /message/send-video`; `video` is a URL or a data-URI."""
        ...

    async def send_document(  # noqa: PLR0913 - one argument per provider field
        self,
        credentials: InstanceCredentials,
        phone: str,
        document: str,
        extension: str,
        *,
        file_name: str | None = None,
        caption: str | None = None,
        quoted_message_id: str | None = None,
        delay_message: int | None = None,
    ) -> SendAccepted | ProviderFailure:
        """`POST /message/send-document`; the provider requires `extension` (e.g. "pdf")."""
        ...

    async def ping(self) -> Reachable | ProviderFailure:
        """Whether the provider's HTTP front answers at all (for `/readyz`)."""
        ...

    async def aclose(self) -> None:
        """Release the connection pool (only if the adapter created it)."""
        ...
