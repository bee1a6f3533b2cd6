"""Argon2id password checks through pwdlib (a well-kept library; never our own crypto)."""

from __future__ import annotations

import anyio.to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher


class Argon2Passwords:
    """Verifies in a worker thread: one Argon2 check takes tens of milliseconds of CPU."""

    def __init__(self) -> None:
        self._hash = PasswordHash((Argon2Hasher(),))
        # Verified when the login is unknown, so both answers take the same time.
        self._decoy = self._hash.hash("zapgate-console-decoy")

    def hash(self, password: str) -> str:
        """A new Argon2id hash of `password` (what `ZAPGATE_CONSOLE_OPERATORS` holds)."""
        return self._hash.hash(password)

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        target = stored_hash or self._decoy
        ok = await anyio.to_thread.run_sync(self._hash.verify, password, target)
        return bool(ok) and stored_hash is not None
