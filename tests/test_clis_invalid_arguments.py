"""Every service CLI answers a bad command line with one coded pt-BR line, not English."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from zapgate.api import cli as api_cli
from zapgate.console import cli as console_cli
from zapgate.health import cli as health_cli
from zapgate.ingest import cli as ingest_cli

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.unit

MAINS: dict[str, Callable[[list[str]], int]] = {
    "zapgate-api": api_cli.main,
    "zapgate-console": console_cli.main,
    "zapgate-health": health_cli.main,
    "zapgate-ingest": ingest_cli.main,
}


@pytest.mark.parametrize(
    ("script", "argv", "reason"),
    [
        ("zapgate-api", ["bogus"], "argumento verb: opção inválida: 'bogus' (use uma de: "),
        ("zapgate-api", ["keys", "create"], "faltam argumentos obrigatórios: name, --instances"),
        ("zapgate-console", ["run", "extra"], "argumentos desconhecidos: extra"),
        ("zapgate-health", ["--timeout", "x", "status"], "argumento --timeout: número inválido"),
        ("zapgate-health", ["--nats-url"], "argumento --nats-url: falta o valor"),
        ("zapgate-ingest", ["bogus"], "argumento command: opção inválida: 'bogus'"),
    ],
)
def test_a_bad_command_line_is_one_coded_line_in_pt_br_and_exit_2(
    capsys: pytest.CaptureFixture[str], script: str, argv: list[str], reason: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        MAINS[script](argv)

    captured = capsys.readouterr()
    assert stopped.value.code == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"erro INVALID_ARGUMENT: argumento inválido ({reason}")
    assert line.endswith(f"). Veja: {script} --help")


def test_ingest_without_a_database_url_says_so_in_pt_br(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZAPGATE_INGEST_DATABASE_URL", raising=False)

    with pytest.raises(SystemExit):
        ingest_cli.main(["stats"])

    assert capsys.readouterr().err == (
        "erro INVALID_ARGUMENT: argumento inválido (--database-url ou "
        "$ZAPGATE_INGEST_DATABASE_URL é obrigatório). Veja: zapgate-ingest --help\n"
    )
