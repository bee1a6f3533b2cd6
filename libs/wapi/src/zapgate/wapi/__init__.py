"""zapgate.wapi: the W-API port, its httpx adapter, and (in `.simulator`) a simulator."""

from zapgate.wapi.client import DEFAULT_BASE_URL, DEFAULT_LIMITS, DEFAULT_TIMEOUT, WapiClient
from zapgate.wapi.credentials import InstanceCredentials
from zapgate.wapi.failures import (
    ProviderBadResponse,
    ProviderFailure,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
    is_failure,
)
from zapgate.wapi.port import WapiPort
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
from zapgate.wapi.webhook_slots import ALL_WEBHOOK_SLOTS, WebhookSlot

__all__ = [
    "ALL_WEBHOOK_SLOTS",
    "DEFAULT_BASE_URL",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "Acknowledged",
    "DeviceInfo",
    "InstanceCredentials",
    "InstanceDetails",
    "InstanceStatus",
    "PairingCode",
    "ProviderBadResponse",
    "ProviderFailure",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnauthorized",
    "ProviderUnavailable",
    "QrCode",
    "Reachable",
    "SendAccepted",
    "WapiClient",
    "WapiPort",
    "WebhookLogs",
    "WebhookSlot",
    "WebhooksConfigured",
    "is_failure",
]
