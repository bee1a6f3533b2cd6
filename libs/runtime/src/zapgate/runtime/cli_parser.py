"""The argument parser of zapgate's command lines: a refusal is one coded pt-BR line.

argparse alone prints its usage and an English `error: ...` line; operators read Brazilian
Portuguese and scripts read codes. `CliArgumentParser` answers a bad command line with
`erro INVALID_ARGUMENT: argumento inválido (<argparse's reason>). Veja: <prog> --help` on
stderr and exit status 2 (argparse's own). Subcommand parsers inherit it (`add_subparsers`
uses the parent's class).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

INVALID_ARGUMENT = "INVALID_ARGUMENT"
INVALID_ARGUMENT_STATUS = 2
# argparse's reasons (Python 3.11 wording) in pt-BR; an unknown one is kept as argparse says it.
_REASONS_PT_BR = (
    (re.compile(r"^argument ([^:]+): "), r"argumento \1: "),
    (
        re.compile(r"invalid choice: (.*) \(choose from (.*)\)$"),
        r"opção inválida: \1 (use uma de: \2)",
    ),
    (re.compile(r"^the following arguments are required: "), "faltam argumentos obrigatórios: "),
    (re.compile(r"^unrecognized arguments: "), "argumentos desconhecidos: "),
    (re.compile(r"expected one argument$"), "falta o valor"),
    (re.compile(r"invalid (int|float) value: "), "número inválido: "),
)


def reason_pt_br(message: str) -> str:
    """argparse's English `message` with its known phrases in pt-BR (names and values kept)."""
    for pattern, replacement in _REASONS_PT_BR:
        message = pattern.sub(replacement, message)
    return message


class CliArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose `error(message)` writes the coded line and exits 2."""

    def error(self, message: str) -> NoReturn:
        """Write `erro INVALID_ARGUMENT: ...` (pt-BR; `message` is argparse's reason) to
        stderr and raise `SystemExit(2)`."""
        command = self.prog.split(" ")[0]
        sys.stderr.write(
            f"erro {INVALID_ARGUMENT}: argumento inválido ({reason_pt_br(message)}). "
            f"Veja: {command} --help\n"
        )
        raise SystemExit(INVALID_ARGUMENT_STATUS)
