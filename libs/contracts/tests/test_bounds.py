"""One function bounds every outside value: safe ones unchanged, others cut with a hash."""

from __future__ import annotations

import re

import pytest

from zapgate.contracts import subjects
from zapgate.contracts.bounds import (
    MAX_ID_CHARS,
    MAX_TOKEN_CHARS,
    bounded_id,
    bounded_optional_id,
)

pytestmark = pytest.mark.unit
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]*(~[0-9a-f]{12})?$")


@pytest.mark.parametrize(
    "value", ["ABC123-DEF456-GHI789", "LITE-ABCDEF-123456", "3EB0C767D26A", "x"]
)
def test_safe_ids_are_unchanged(value: str) -> None:
    """Real W-API instance and message ids pass through as they are."""
    assert bounded_id(value) == value
    assert bounded_id(value, token=True) == value


def test_ids_that_differ_only_in_unsafe_characters_stay_distinct() -> None:
    """`a.b`, `a_b`, `a*b` and `a b` used to collide as one subject token."""
    tokens = {bounded_id(value, token=True) for value in ("a.b", "a_b", "a*b", "a b", "a>b")}
    assert len(tokens) == 5
    assert bounded_id("a_b", token=True) == "a_b"
    assert bounded_id("a.b", token=True).startswith("a_b~")


@pytest.mark.parametrize(
    "value",
    [
        "I" * 5000,
        "I" * 200_000,
        "a.b.c.*.>" * 100,
        "\ud83d" * 10,
        "\x00nul",
        "ümlaut é 😀",
        "",
        "~" + "0" * 12,
        "tab\tnew\nline",
    ],
)
def test_every_outside_value_becomes_a_bounded_token(value: str) -> None:
    """Length, characters and encodability are bounded whatever comes in."""
    token = subjects.token(value)
    assert len(token) <= MAX_TOKEN_CHARS
    assert _TOKEN.match(token)
    token.encode()  # never a lone surrogate
    text = bounded_id(value)
    assert len(text) <= MAX_ID_CHARS
    assert not re.search(r"[\x00-\x1f\ud800-\udfff]", text)
    text.encode()


def test_long_ids_with_a_common_prefix_stay_distinct() -> None:
    """Cutting keeps a hash of the whole value, not of the kept part."""
    first, second = "I" * 5000 + "1", "I" * 5000 + "2"
    assert bounded_id(first, token=True) != bounded_id(second, token=True)
    assert bounded_id(first) != bounded_id(second)


def test_a_value_shaped_like_a_hashed_id_cannot_impersonate_one() -> None:
    """`~` is never let through as is, so only hashing produces `x~<hash>`."""
    hashed = bounded_id("a.b", token=True)
    assert bounded_id(hashed, token=True) != hashed
    assert bounded_id("x\ny") != bounded_id(bounded_id("x\ny"))


def test_text_mode_keeps_printable_characters() -> None:
    """Chat and message ids keep `@`, `.` and `:`; only a token rewrites them."""
    assert bounded_id("5511988887777@s.whatsapp.net") == "5511988887777@s.whatsapp.net"
    assert bounded_id("5511988887777@s.whatsapp.net", token=True).startswith("5511988887777_s_")


def test_integers_and_absent_values() -> None:
    """Numeric ids become their digits; absent or non-scalar values give None."""
    assert bounded_optional_id(5511999990000) == "5511999990000"
    assert bounded_optional_id(10**5000) is not None
    assert bounded_optional_id(None) is None
    assert bounded_optional_id(value=True) is None
    assert bounded_optional_id({"id": 1}) is None
    assert bounded_optional_id("") is None


def test_a_limit_without_room_for_the_hash_is_refused() -> None:
    """The suffix needs 13 characters."""
    with pytest.raises(ValueError, match="too small"):
        bounded_id("abc", limit=10)
