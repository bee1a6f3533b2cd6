"""Throwaway nkey users for a nats-server with zapgate's permissions (tests and `./taskw up`).

`DevCredentials.generate()` makes one fresh seed per user and a password for the `harness`
user; `write_server_config()` writes the `accounts` block the permissions module renders, for
`NatsServer(config_file=...)` or `NatsServer(auth=...)`.

The harness user (user/password, every permission) exists only here: it is what test code and
the local stack's tools connect as (`NatsServer.url` carries it), so tests can inspect and set up
anything, while the services log in with their own nkey seeds (`service_env()`), which win over
the URL's user and password, and run with exactly their production permissions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from zapgate.runtime import nats_auth

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

DEFAULT_USERS: Final = (*nats_auth.ROLES, f"{nats_auth.CALLER_PREFIX}-test")
"""Every role, and one caller system named `test` (user `caller-test`)."""
HARNESS_USER: Final = "harness"
SERVICES: Final = ("ingest", "health", "sender", "api", "console")
"""Services whose settings read `ZAPGATE_<SVC>_NATS_SEED` in tests: every one of them."""


@dataclass(frozen=True, slots=True)
class DevCredentials:
    """One nkey seed per user name. Never use these outside a test or a local stack."""

    seeds: Mapping[str, str]
    harness_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @classmethod
    def generate(cls, users: Iterable[str] = DEFAULT_USERS) -> DevCredentials:
        return cls({user: nats_auth.new_user_seed() for user in users})

    def harness_url(self, host: str, port: int) -> str:
        """`nats://harness:<password>@host:port`: the URL test code connects with."""
        return f"nats://{HARNESS_USER}:{self.harness_password}@{host}:{port}"

    def service_env(self) -> dict[str, str]:
        """`ZAPGATE_<SVC>_NATS_SEED` for every service: their settings log in with it."""
        return {
            f"ZAPGATE_{service.upper()}_NATS_SEED": self.seeds[service]
            for service in SERVICES
            if service in self.seeds
        }

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
        harness = {
            "user": HARNESS_USER,
            "password": self.harness_password,
            "permissions": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}},
        }
        text = nats_auth.server_config(
            self.public_keys(), consumer_prefixes=consumer_prefixes, extra_users=[harness]
        )
        path.write_text(text, encoding="utf-8")
        return path
