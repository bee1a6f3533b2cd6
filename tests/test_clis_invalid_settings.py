"""Every service CLI refuses invalid settings with one coded pt-BR line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

SECRET = "s3cret-that-must-not-be-echoed-0123456789"


def _run(script: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ZAPGATE_")}
    return subprocess.run(  # noqa: S603 - our own console scripts
        [str(Path(sys.executable).parent / script), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean | env,
    )


@pytest.mark.parametrize(
    ("script", "argv", "prefix"),
    [
        ("zapgate-api", ["keys", "list"], "ZAPGATE_API_"),
        ("zapgate-console", ["migrate"], "ZAPGATE_CONSOLE_"),
        ("zapgate-health", ["migrate"], "ZAPGATE_HEALTH_"),
        ("zapgate-ingest", ["run"], "ZAPGATE_INGEST_"),
        ("zapgate-sender", ["migrate"], "ZAPGATE_SENDER_"),
    ],
)
def test_a_missing_database_url_and_a_bad_number_answer_one_coded_line(
    script: str, argv: list[str], prefix: str
) -> None:
    """Missing `DATABASE_URL`, a non-number `PROBE_PORT` and a secret-looking seed: exit 2,
    `erro SETTINGS_INVALID:` naming each variable in pt-BR, no traceback, no value echoed."""
    done = _run(
        script,
        argv,
        {
            f"{prefix}ENVIRONMENT": "dev",
            f"{prefix}PROBE_PORT": "oitenta",
            f"{prefix}NATS_SEED": SECRET,
        },
    )

    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, output
    assert len(output) == 1, output
    [line] = output
    assert line.startswith("erro SETTINGS_INVALID: configuração inválida: "), line
    assert f"{prefix}DATABASE_URL: obrigatória e não definida" in line
    assert f"{prefix}PROBE_PORT: deve ser um número inteiro" in line
    assert "oitenta" not in line
    assert SECRET not in line
