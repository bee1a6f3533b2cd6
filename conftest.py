"""Root conftest: the real-server fixtures come from the workspace's pytest plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import structlog

if TYPE_CHECKING:
    from collections.abc import Iterator

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
