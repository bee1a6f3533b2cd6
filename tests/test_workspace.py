"""The workspace is wired as the design says."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytestmark = pytest.mark.unit


def test_every_service_declares_its_migrations() -> None:
    """The test template and zapgate-migrate find every service's schemas (the console's
    audit table included)."""
    names = {entry.name for entry in entry_points(group="zapgate.migrations")}
    assert names == {"ingest", "sender", "health", "api", "console"}


def test_every_service_has_its_own_version_table() -> None:
    """Each service owns its own migration history in the shared database."""
    specs = [entry.load() for entry in entry_points(group="zapgate.migrations")]
    tables = [spec.version_table for spec in specs]
    assert len(set(tables)) == len(tables) == 5
