"""`zapgate-api keys ...` against a real, migrated PostgreSQL."""

from __future__ import annotations

import pytest

from zapgate.api.cli import main
from zapgate.api.domain import key_id_of

pytestmark = pytest.mark.real


def test_keys_are_created_once_listed_without_secrets_and_revoked(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """create prints the token once; list shows id, state, name, scope; revoke refuses twice."""
    monkeypatch.setenv("ZAPGATE_API_DATABASE_URL", database_url)
    monkeypatch.setenv("ZAPGATE_API_ENVIRONMENT", "test")

    created = main(["keys", "create", "loja", "--instances", "loja-sul, loja-centro"])
    made = capsys.readouterr().out
    token = made.rsplit(": ", 1)[-1].strip()
    key_id = key_id_of(token)
    listed = main(["keys", "list"])
    listing = capsys.readouterr().out
    revoked = main(["keys", "revoke", str(key_id)])
    again = main(["keys", "revoke", str(key_id)])
    after = capsys.readouterr().out
    main(["keys", "list"])
    final = capsys.readouterr().out

    assert (created, listed, revoked, again) == (0, 0, 0, 1)
    assert key_id is not None
    assert f"key_id: {key_id}" in made
    assert listing.strip() == f"{key_id}\tactive\tloja\tloja-centro,loja-sul"
    assert token not in listing
    assert after.splitlines() == ["revoked", "no such active key"]
    assert final.strip() == f"{key_id}\trevoked\tloja\tloja-centro,loja-sul"
