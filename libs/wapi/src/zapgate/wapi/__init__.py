"""zapgate.wapi: the W-API port, its aiohttp adapter, and (in `.simulator`) a simulator."""

from zapgate.wapi.client import (
    DEFAULT_BASE_URL,
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    IDEMPOTENT_READS,
    WapiClient,
    WapiLimits,
    WapiTimeouts,
)
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
from zapgate.wapi.metrics import WapiMetrics
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
    "IDEMPOTENT_READS",
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
    "WapiLimits",
    "WapiMetrics",
    "WapiPort",
    "WapiTimeouts",
    "WebhookLogs",
    "WebhookSlot",
    "WebhooksConfigured",
    "is_failure",
]
