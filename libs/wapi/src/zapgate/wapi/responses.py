"""Turn a W-API HTTP answer into a typed result. Pure functions, no I/O.

The provider's error shapes (WAPI.md): non-2xx and/or `{"error": true, "message": ...}`,
gateway pages (502/503/504, often HTML). Fields graded below B may be missing or of another
type: coercion is tolerant and a wrong type never raises.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus

from zapgate.wapi.failures import (
    ProviderBadResponse,
    ProviderFailure,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnauthorized,
    ProviderUnavailable,
)
from zapgate.wapi.results import (
    Acknowledged,
    DeviceInfo,
    InstanceDetails,
    InstanceStatus,
    PairingCode,
    QrCode,
    SendAccepted,
    WebhookLogs,
)

JsonObject = dict[str, object]

_SNIPPET_CHARS = 160
_RETRYABLE_REJECTIONS = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})
# Plain ints for the per-call success test: an `HTTPStatus` member lookup is an enum
# descriptor call, measurable at thousands of checks per second.
_OK_LOW = int(HTTPStatus.OK)
_OK_HIGH = int(HTTPStatus.MULTIPLE_CHOICES)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def classify(operation: str, status_code: int, body: bytes) -> JsonObject | ProviderFailure:
    """The answer's JSON object when the provider accepted the call, else the failure."""
    payload = _json_object(body)
    provider_message = _text(payload.get("message")) if payload is not None else None
    if not _OK_LOW <= status_code < _OK_HIGH:
        detail = f"HTTP {status_code}: {provider_message or _snippet(body)}"
        return _status_failure(operation, status_code, detail, provider_message)
    if payload is None:
        return ProviderBadResponse(
            operation=operation,
            detail=f"HTTP {status_code} body is not a JSON object: {_snippet(body)}",
            status_code=status_code,
        )
    if as_bool(payload.get("error")):
        return ProviderRejected(
            operation=operation,
            message=provider_message or "O W-API recusou a chamada.",
            detail=f"HTTP {status_code} with error=true",
            status_code=status_code,
        )
    return payload


def _status_failure(
    operation: str, status_code: int, detail: str, provider_message: str | None
) -> ProviderFailure:
    if status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return ProviderUnauthorized(operation=operation, detail=detail, status_code=status_code)
    if status_code == HTTPStatus.GATEWAY_TIMEOUT:
        # A gateway timeout means the gateway forwarded the request and gave up waiting: the
        # provider behind it may still have acted (a send may go out), so the outcome is unknown.
        return ProviderTimeout(operation=operation, detail=detail, status_code=status_code)
    if status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return ProviderUnavailable(operation=operation, detail=detail, status_code=status_code)
    if status_code >= HTTPStatus.BAD_REQUEST:
        return ProviderRejected(
            operation=operation,
            message=provider_message or f"O W-API recusou a chamada (HTTP {status_code}).",
            detail=detail,
            status_code=status_code,
            retryable=status_code in _RETRYABLE_REJECTIONS,
        )
    # 1xx/3xx: we never follow redirects, and a provider redirect is not an answer we know.
    return ProviderBadResponse(operation=operation, detail=detail, status_code=status_code)


def parse_status(operation: str, payload: JsonObject) -> InstanceStatus | ProviderFailure:
    connected = as_bool(payload.get("connected"))
    if connected is None:
        return _bad(operation, "status answered without a boolean 'connected'")
    return InstanceStatus(connected=connected)


def parse_details(operation: str, payload: JsonObject) -> InstanceDetails:
    del operation  # every field is optional: there is nothing to refuse
    return InstanceDetails(
        connected=as_bool(payload.get("connected")),
        connected_phone=as_text(payload.get("connectedPhone")),
        raw=payload,
    )


def parse_device(operation: str, payload: JsonObject) -> DeviceInfo:
    del operation
    return DeviceInfo(
        connected_phone=as_text(payload.get("connectedPhone")),
        lid=as_text(payload.get("lid")),
        name=as_text(payload.get("name")),
        platform=as_text(payload.get("platform")),
        status=as_text(payload.get("status")),
        is_business=as_bool(payload.get("isBusiness")),
        raw=payload,
    )


def parse_acknowledged(operation: str, payload: JsonObject) -> Acknowledged:
    del operation
    return Acknowledged(message=_text(payload.get("message")))


def parse_qr_code(operation: str, payload: JsonObject) -> QrCode | ProviderFailure:
    qrcode = as_text(payload.get("qrcode"))
    connected = as_bool(payload.get("connected")) is True
    if qrcode is None and not connected:
        return _bad(operation, "qr-code answered neither 'qrcode' nor 'connected: true'")
    return QrCode(qrcode=qrcode, connected=connected)


def parse_pairing_code(operation: str, payload: JsonObject) -> PairingCode | ProviderFailure:
    code = as_text(payload.get("pairingCode"))
    if code is None:
        return _bad(operation, "pairing-code answered without 'pairingCode'")
    return PairingCode(code=code)


def parse_send(operation: str, payload: JsonObject) -> SendAccepted | ProviderFailure:
    # Without a messageId we cannot correlate status webhooks: never call that a success.
    message_id = as_text(payload.get("messageId"))
    if message_id is None:
        return _bad(operation, "send answered 2xx without 'messageId'")
    return SendAccepted(message_id=message_id, inserted_id=as_text(payload.get("insertedId")))


def parse_webhook_logs(operation: str, payload: JsonObject) -> WebhookLogs:
    del operation
    return WebhookLogs(raw=payload)


def as_bool(value: object) -> bool | None:
    """A boolean from `true`, `"true"`, `1`...; None when the value says nothing clear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return None


def as_text(value: object) -> str | None:
    """A non-empty identifier-like string; numbers (phones sent as ints) become digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _text(value: object) -> str | None:
    # Messages are kept verbatim (no stripping): they are shown to people as the provider said.
    if isinstance(value, str) and value:
        return value
    return None


def _bad(operation: str, detail: str) -> ProviderBadResponse:
    return ProviderBadResponse(operation=operation, detail=detail)


def _json_object(body: bytes) -> JsonObject | None:
    if not body:
        return None
    try:
        decoded: object = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    # JSON object keys are always strings: the decoded dict is already a `JsonObject`.
    return decoded if isinstance(decoded, dict) else None


def _snippet(body: bytes) -> str:
    if not body:
        return "<empty body>"
    title = _TITLE.search(body)
    if title is not None:
        return "HTML page: " + _collapse(title.group(1))
    return _collapse(body)


def _collapse(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return text[:_SNIPPET_CHARS]
