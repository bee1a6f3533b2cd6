"""Throwaway nkey users for a nats-server with zapgate's permissions (tests and `./taskw up`).

`DevCredentials.generate()` makes one fresh seed per user; `write_server_config()` writes the
`accounts` block the permissions module renders, for `NatsServer(config_file=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from zapgate.runtime import nats_auth

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

DEFAULT_USERS: Final = (*nats_auth.ROLES, f"{nats_auth.CALLER_PREFIX}-test")
"""Every role, and one caller system named `test` (user `caller-test`)."""


@dataclass(frozen=True, slots=True)
class DevCredentials:
    """One nkey seed per user name. Never use these outside a test or a local stack."""

    seeds: Mapping[str, str]

    @classmethod
    def generate(cls, users: Iterable[str] = DEFAULT_USERS) -> DevCredentials:
        return cls({user: nats_auth.new_user_seed() for user in users})

    def seed(self, user: str) -> str:
        return self.seeds[user]

    def options(self, user: str) -> dict[str, Any]:
        """`nats.connect(**...)` arguments that log in as `user`."""
        return nats_auth.connect_options(user, self.seeds[user])

    def public_keys(self) -> dict[str, list[str]]:
        return {user: [nats_auth.public_key(seed)] for user, seed in self.seeds.items()}

    def write_server_config(
        self, path: Path, *, consumer_prefixes: Mapping[str, str] | None = None
    ) -> Path:
        """Write the server's `accounts` block (public keys only) to `path` and return it."""
        text = nats_auth.server_config(self.public_keys(), consumer_prefixes=consumer_prefixes)
        path.write_text(text, encoding="utf-8")
        return path
