"""Generate the JSON Schema snapshot of every contract.

`python -m zapgate.contracts.schemas <dir>` writes one file per model; a test regenerates
them and fails when the committed copy drifted, so a contract change shows up in review.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from zapgate.contracts import errors, health, sending, webhooks

MODULES = (errors, health, sending, webhooks)


def contract_models() -> dict[str, type[BaseModel]]:
    """Every public model defined in the contract modules, by class name."""
    found = {
        name: value
        for module in MODULES
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }
    return dict(sorted(found.items()))


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, deterministic."""
    return {
        f"{name}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in contract_models().items()
    }


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.json"):
        stale.unlink()
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("libs/contracts/schemas")
    for path in write_schemas(target):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
