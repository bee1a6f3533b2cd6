"""Standard Webhooks signing: the spec's vector, verification, rotation and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.runtime import signing

pytestmark = pytest.mark.unit

# The test vector of the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_AT = datetime.fromtimestamp(1614265330, UTC)
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_specification_test_vector() -> None:
    """Signing the spec's id, timestamp and body gives the spec's signature and headers."""
    headers = signing.sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_AT, body=SPEC_BODY)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_sign_uses_whole_utc_seconds_of_any_aware_time() -> None:
    """A non-UTC aware time with microseconds signs the same Unix second."""
    brt = SPEC_AT.astimezone(datetime.now(UTC).astimezone().tzinfo) + timedelta(microseconds=7)
    assert signing.sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=brt, body=SPEC_BODY) == (
        signing.sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_AT, body=SPEC_BODY)
    )


def test_verify_accepts_a_signature_by_any_current_secret() -> None:
    """Rotation: the verifier holds the old and the new secret; both signatures pass."""
    new = signing.new_secret()
    headers = signing.sign(new, msg_id="evt-1", timestamp=SPEC_AT, body=b"{}")
    assert signing.verify([SPEC_SECRET, new], headers=headers, body=b"{}", now=SPEC_AT) == "evt-1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": b'{"test": 2432232315}'}, "no_matching_signature"),
        ({"secret": "whsec_" + "A" * 40}, "no_matching_signature"),
        ({"now": SPEC_AT + timedelta(minutes=6)}, "timestamp_out_of_tolerance"),
        ({"now": SPEC_AT - timedelta(minutes=6)}, "timestamp_out_of_tolerance"),
        ({"drop": "webhook-signature"}, "missing_headers"),
        ({"drop": "webhook-id"}, "missing_headers"),
        ({"timestamp": "soon"}, "bad_timestamp"),
        ({"signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "no_matching_signature"),
    ],
)
def test_verify_refuses_every_kind_of_mismatch(change: dict[str, object], reason: str) -> None:
    """Changed body, wrong secret, stale or future timestamp, missing header, other version."""
    headers = {
        "Webhook-Id": SPEC_ID,
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": SPEC_SIGNATURE,
    }
    if "drop" in change:
        headers = {k: v for k, v in headers.items() if k.lower() != change["drop"]}
    if "timestamp" in change:
        headers["Webhook-Timestamp"] = str(change["timestamp"])
    if "signature" in change:
        headers["Webhook-Signature"] = str(change["signature"])
    body = change.get("body", SPEC_BODY)
    now = change.get("now", SPEC_AT)
    secret = str(change.get("secret", SPEC_SECRET))
    assert isinstance(body, bytes)
    assert isinstance(now, datetime)
    with pytest.raises(signing.SignatureError) as refused:
        signing.verify([secret], headers=headers, body=body, now=now)
    assert refused.value.reason == reason


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ="])
def test_malformed_or_short_secrets_are_refused(secret: str) -> None:
    """Empty, non-base64 and short (< 24 bytes) secrets cannot sign."""
    with pytest.raises(signing.InvalidSecretError):
        signing.check_secret(secret)


def test_signing_refuses_a_naive_datetime() -> None:
    """A timestamp without a zone would sign a different second on another machine."""
    with pytest.raises(ValueError, match="aware"):
        signing.sign(SPEC_SECRET, msg_id="x", timestamp=datetime(2026, 1, 1), body=b"{}")  # noqa: DTZ001 - the case under test
