"""Outbound webhook signatures per the Standard Webhooks specification (standardwebhooks.com).

Every POST zapgate makes to a user's URL carries three headers:

- `webhook-id`: the message id (the event id; stays the same across retries, so receivers dedupe),
- `webhook-timestamp`: Unix seconds when this attempt was signed,
- `webhook-signature`: `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`; several
  space-separated entries while a secret is being rotated.

The secret is `whsec_` + base64 of the key bytes (the spec's format). The HMAC comes from the
`standardwebhooks` package (the specification's reference implementation); this module only
adds an injected clock, aware-datetime handling and typed headers, so every zapgate service signs
and verifies the same way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
DEFAULT_TOLERANCE = timedelta(minutes=5)
"""How far a timestamp may be from the verifier's clock (the specification's default)."""


class InvalidSecretError(ValueError):
    """The secret is not `whsec_<base64>` with at least 24 key bytes."""


class SignatureError(ValueError):
    """Verification failed: a header is missing, the timestamp is out of tolerance, or no
    signature matched. `reason` is a stable machine word for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_MIN_KEY_BYTES = 24


def _webhook(secret: str) -> Webhook:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecretError("the secret is not base64 after its whsec_ prefix") from exc
    if len(key) < _MIN_KEY_BYTES:
        raise InvalidSecretError(f"the secret must carry at least {_MIN_KEY_BYTES} key bytes")
    return Webhook(key)


def check_secret(secret: str) -> str:
    """Return `secret` unchanged when it is a usable signing secret; raise `InvalidSecretError`."""
    _webhook(secret)
    return secret


def new_secret() -> str:
    """A fresh random secret in the spec's format (32 key bytes)."""
    import secrets  # noqa: PLC0415 - only the CLI that mints secrets needs it

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _unix(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("signing needs an aware datetime")
    return math.floor(moment.astimezone(UTC).timestamp())


def sign(secret: str, *, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of one message.

    `body` must be the exact bytes sent (UTF-8 JSON); `timestamp` an aware datetime (whole
    seconds are signed). Raises `InvalidSecretError` for a malformed secret.
    """
    seconds = _unix(timestamp)
    at = datetime.fromtimestamp(seconds, UTC)
    signature = _webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body.decode())
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(seconds), SIGNATURE_HEADER: signature}


def verify(
    secrets: Sequence[str],
    *,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> str:
    """Check a signed request against any of `secrets` (rotation); return its `webhook-id`.

    Raises `SignatureError` with reason `missing_headers`, `bad_timestamp`,
    `timestamp_out_of_tolerance` or `no_matching_signature`.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get(ID_HEADER)
    stamp = lowered.get(TIMESTAMP_HEADER)
    presented = lowered.get(SIGNATURE_HEADER)
    if not (msg_id and stamp and presented):
        raise SignatureError("missing_headers")
    try:
        at = datetime.fromtimestamp(int(stamp), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise SignatureError("bad_timestamp") from exc
    if abs(now - at) > tolerance:
        raise SignatureError("timestamp_out_of_tolerance")
    candidates = [part.split(",", 1)[1] for part in presented.split(" ") if part.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id=msg_id, timestamp=at, body=body)[SIGNATURE_HEADER]
        expected_b64 = expected.split(",", 1)[1]
        if any(hmac.compare_digest(expected_b64, candidate) for candidate in candidates):
            return msg_id
    raise SignatureError("no_matching_signature")
