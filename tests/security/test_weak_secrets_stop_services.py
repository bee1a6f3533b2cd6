"""A weak or placeholder secret stops each service at start in prod, with a coded message.

Each service's real console script runs with nothing but its settings in the environment
(prod is the default); it must exit non-zero before touching NATS or PostgreSQL, name the
code, and never print the secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

BIN = Path(sys.executable).parent
# Port 1 on loopback: nothing listens there, so reaching it would be a failure of its own.
UNREACHABLE_DB = "postgresql+psycopg://zapgate:{password}@127.0.0.1:1/zapgate"
STRONG = "Xq8-jT2v9LmP4wRz7KcN1bYh6DsF3gUe-q0"
WEAK = {
    "SECRET_COMMON": "Senha@123",
    "SECRET_PLACEHOLDER": "changeme-postgres-password",
    "SECRET_TOO_SHORT": "Xq8-jT2v9LmP4wRz",
}


def _run(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    keep = {key: value for key, value in os.environ.items() if not key.startswith("ZAPGATE_")}
    # S603: the script path is this environment's own console script.
    return subprocess.run(  # noqa: S603
        [str(BIN / f"zapgate-{service}"), "run"],
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# One kind of weak secret per service keeps the process count (and the run time) low; every
# kind is covered for the settings base itself in libs/runtime/tests/test_settings_fail_closed.py.
@pytest.mark.parametrize(
    ("service", "code"),
    [("ingest", "SECRET_COMMON"), ("health", "SECRET_PLACEHOLDER"), ("sender", "SECRET_TOO_SHORT")],
)
def test_a_weak_database_password_stops_the_service_in_prod(service: str, code: str) -> None:
    """`zapgate-<svc> run` with a weak database password exits with the code, not the value."""
    prefix = f"ZAPGATE_{service.upper()}_"
    password = WEAK[code]
    env = {
        f"{prefix}DATABASE_URL": UNREACHABLE_DB.format(password=password),
        f"{prefix}NATS_URL": "nats://127.0.0.1:1",
    }
    if service == "ingest":
        env[f"{prefix}WEBHOOK_SECRETS"] = STRONG
    done = _run(service, env)
    assert done.returncode != 0
    assert code in done.stderr
    assert "database_url password" in done.stderr
    assert password not in done.stdout + done.stderr


def test_a_weak_webhook_secret_stops_ingest_in_prod() -> None:
    """Ingest refuses `12345` as a webhook path secret in prod."""
    env = {
        "ZAPGATE_INGEST_DATABASE_URL": UNREACHABLE_DB.format(password=STRONG),
        "ZAPGATE_INGEST_WEBHOOK_SECRETS": f"{STRONG},12345",
    }
    done = _run("ingest", env)
    assert done.returncode != 0
    assert "ZAPGATE_INGEST_WEBHOOK_SECRETS: SECRET_COMMON" in done.stderr
    assert STRONG not in done.stdout + done.stderr
