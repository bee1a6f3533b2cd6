"""`zapgate-nats-auth`: make nkey users and render nats-server's permissions from zapgate's roles.

A key directory holds, per user, `<user>.nk` (the seed: the secret the service connects with,
mode 0600) and `<user>.pub` (its public keys, one a line; two during a rotation). Only the
`.pub` files are needed to render the server configuration.

    zapgate-nats-auth keys --dir secrets/nats ingest health sender api console operator admin
    zapgate-nats-auth keys --dir secrets/nats caller-billing          # a new caller system
    zapgate-nats-auth keys --dir secrets/nats --rotate sender          # new seed, both keys valid
    zapgate-nats-auth retire --dir secrets/nats sender                 # keep only the newest key
    zapgate-nats-auth config --dir secrets/nats --out deploy/nats/auth.conf
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zapgate.runtime import nats_auth

if TYPE_CHECKING:
    from collections.abc import Sequence

_SEED_MODE = 0o600


def _pub_path(directory: Path, user: str) -> Path:
    return directory / f"{user}.pub"


def _read_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_keys(directory: Path, users: Sequence[str], *, rotate: bool = False) -> list[str]:
    """Create a seed for each user that has none (or a new one with `rotate`); returns the
    users whose keys changed. A rotated user keeps its old public key until `retire`."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for user in users:
        nats_auth.role_for(user)  # refuse a user without a role before writing anything
        seed_path = directory / f"{user}.nk"
        if seed_path.exists() and not rotate:
            continue
        if seed_path.exists():
            seed_path.replace(directory / f"{user}.nk.old")
        seed = nats_auth.new_user_seed()
        descriptor = os.open(seed_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _SEED_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(seed + "\n")
        keys = [*_read_keys(_pub_path(directory, user)), nats_auth.public_key(seed)]
        _pub_path(directory, user).write_text("\n".join(keys) + "\n", encoding="utf-8")
        changed.append(user)
    return changed


def retire_old_keys(directory: Path, user: str) -> None:
    """Keep only the newest public key of `user` (after every process uses the new seed)."""
    keys = _read_keys(_pub_path(directory, user))
    if not keys:
        raise FileNotFoundError(f"no public key for {user} in {directory}")
    _pub_path(directory, user).write_text(keys[-1] + "\n", encoding="utf-8")
    (directory / f"{user}.nk.old").unlink(missing_ok=True)


def render(directory: Path) -> str:
    """The server configuration for every `<user>.pub` in `directory`."""
    keys = {path.stem: _read_keys(path) for path in sorted(directory.glob("*.pub"))}
    return nats_auth.server_config(keys)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zapgate-nats-auth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="create missing seeds (or rotate them)")
    keys.add_argument("--dir", type=Path, required=True)
    keys.add_argument("--rotate", action="store_true", help="a new seed; the old key stays valid")
    keys.add_argument("users", nargs="+")
    retire = commands.add_parser("retire", help="drop every public key but the newest")
    retire.add_argument("--dir", type=Path, required=True)
    retire.add_argument("users", nargs="+")
    config = commands.add_parser("config", help="render the server's accounts block")
    config.add_argument("--dir", type=Path, required=True)
    config.add_argument("--out", type=Path, help="default: stdout")
    args = parser.parse_args(argv)

    if args.command == "keys":
        try:
            changed = make_keys(args.dir, args.users, rotate=args.rotate)
        except KeyError as exc:
            parser.error(str(exc))
        sys.stdout.write(f"new keys: {', '.join(changed) or 'none'}\n")
    elif args.command == "retire":
        for user in args.users:
            retire_old_keys(args.dir, user)
    else:
        text = render(args.dir)
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
