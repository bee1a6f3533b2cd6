"""The permission declaration and the key tool, without a server."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from zapgate.runtime import nats_auth
from zapgate.runtime.nats_auth_cli import main, render

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit


def _publish_allow(user: str) -> list[str]:
    allowed: list[str] = nats_auth.role_for(user).permissions()["publish"]["allow"]
    return allowed


@pytest.mark.parametrize("user", sorted(set(nats_auth.ROLES) - {"admin"}))
def test_only_admin_reaches_the_stream_management_api(user: str) -> None:
    """No role but admin may create, update, purge or delete a stream, or list them (ingest's
    own object store bucket aside)."""
    for subject in _publish_allow(user):
        if user == "ingest" and subject.endswith(".OBJ_ZG_WEBHOOK_BODIES"):
            continue  # ingest's own object store of large bodies, which it declares itself
        assert not subject.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.DELETE")), subject
        assert not subject.startswith(("$JS.API.STREAM.PURGE", "$JS.API.STREAM.UPDATE")), subject
        assert subject not in {"$JS.API.>", ">", "$JS.>", "$JS.API.STREAM.>"}, subject
    assert "$JS.API.>" in _publish_allow("admin")


@pytest.mark.parametrize("user", [*sorted(nats_auth.ROLES), "caller-billing"])
def test_every_user_subscribes_to_its_own_inbox_only(user: str) -> None:
    """Replies go to `_INBOX_<user>`; no role may subscribe to the shared `_INBOX` space."""
    allowed = nats_auth.role_for(user).permissions()["subscribe"]["allow"]
    assert f"_INBOX_{user}.>" in allowed
    assert not [subject for subject in allowed if subject.startswith("_INBOX.")]
    assert nats_auth.connect_options(user, "seed")["inbox_prefix"] == f"_INBOX_{user}"


def test_a_user_without_a_role_is_refused() -> None:
    """An unknown user name never gets a default role."""
    with pytest.raises(KeyError):
        nats_auth.role_for("mallory")
    with pytest.raises(ValueError, match="system name"):
        nats_auth.caller_role("a.b")


def test_a_seed_gives_a_user_public_key_and_garbage_is_refused() -> None:
    """Seeds are `SU...`, public keys `U...`; anything else is refused."""
    seed = nats_auth.new_user_seed()
    assert seed.startswith("SU")
    assert nats_auth.public_key(seed).startswith("U")
    with pytest.raises(ValueError, match="nkey"):
        nats_auth.public_key("SUNOTASEED")
    with pytest.raises(ValueError, match="nkey user public key"):
        nats_auth.server_config({"sender": ["password123"]})


def test_keys_rotate_with_both_keys_valid_then_the_old_one_retires(tmp_path: Path) -> None:
    """`keys --rotate` keeps the old key in the config until `retire` drops it."""
    assert main(["keys", "--dir", str(tmp_path), "sender", "caller-billing"]) == 0
    seed_path = tmp_path / "sender.nk"
    assert stat.S_IMODE(seed_path.stat().st_mode) == 0o600
    first = nats_auth.public_key(seed_path.read_text())
    assert main(["keys", "--dir", str(tmp_path), "sender"]) == 0  # exists: unchanged
    assert nats_auth.public_key(seed_path.read_text()) == first

    assert main(["keys", "--dir", str(tmp_path), "--rotate", "sender"]) == 0
    second = nats_auth.public_key(seed_path.read_text())
    assert second != first
    config = render(tmp_path)
    assert first in config
    assert second in config
    assert "_INBOX_caller-billing.>" in config

    assert main(["retire", "--dir", str(tmp_path), "sender"]) == 0
    config = render(tmp_path)
    assert first not in config
    assert second in config
    out = tmp_path / "auth.conf"
    assert main(["config", "--dir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == config
    for seed_file in tmp_path.glob("*.nk"):  # no seed ever reaches the server configuration
        assert seed_file.read_text().strip() not in config
