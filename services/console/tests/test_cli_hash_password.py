"""`zapgate-console hash-password` as a process: an Argon2id hash, or a coded pt-BR refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

SCRIPT = str(Path(sys.executable).parent / "zapgate-console")


def _hash(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [SCRIPT, "hash-password"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_empty_password_is_refused_with_a_code_in_pt_br() -> None:
    done = _hash("\n")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "erro PASSWORD_EMPTY: senha vazia; digite a senha do operador.\n"


def test_a_password_on_stdin_gives_its_argon2id_hash() -> None:
    done = _hash("correct horse\n")

    assert done.returncode == 0
    assert done.stdout.startswith("$argon2id$")
    assert "correct horse" not in done.stdout + done.stderr
