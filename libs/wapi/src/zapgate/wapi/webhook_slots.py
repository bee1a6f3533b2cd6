"""The six webhook slots a W-API instance can point at a URL."""

from __future__ import annotations

from enum import StrEnum


class WebhookSlot(StrEnum):
    """One webhook slot; the value is the suffix of its `update-webhook-<slot>` call."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    DELIVERY = "delivery"
    RECEIVED = "received"
    MESSAGE_STATUS = "message-status"
    CHAT_PRESENCE = "chat-presence"

    @property
    def operation(self) -> str:
        return f"update-webhook-{self.value}"


ALL_WEBHOOK_SLOTS: tuple[WebhookSlot, ...] = tuple(WebhookSlot)
