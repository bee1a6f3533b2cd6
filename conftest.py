"""Root conftest: the real-server fixtures come from the workspace's pytest plugins."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator

# pytest keeps only the newest three `pytest-N` folders under one temp root and deletes the
# older ones when a run starts, so two checkouts testing at once on one machine delete each
# other's embedded PostgreSQL data directories mid-run. One temp root per checkout (short, for
# PostgreSQL's socket path limit) keeps concurrent runs from different checkouts apart.
# pytest reads the variable lazily, at the first use of a temporary path.
_checkout = hashlib.sha256(str(Path(__file__).resolve().parent).encode()).hexdigest()[:10]
_temp_root = Path(tempfile.gettempdir()) / f"zapgate-pytest-{_checkout}"
_temp_root.mkdir(mode=0o700, exist_ok=True)
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(_temp_root))

pytest_plugins = [
    "zapgate.devservers.pytest_plugin",
    "zapgate.wapi.pytest_plugin",
]


@pytest.fixture(autouse=True)
def _structlog_config_is_restored() -> Iterator[None]:
    """A test that runs an entrypoint (which configures logging) must not change the next
    test's logging: `capture_logs` assertions depend on the default level filter."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
