"""The committed OpenAPI document: `python -m zapgate.api.openapi [path]` rewrites it.

A test regenerates it and fails on drift, so an API change shows up in review.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from zapgate.api.app import create_app

DEFAULT_PATH = Path("services/api/openapi.json")


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document FastAPI generates from the routes and models."""
    return create_app().openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    target.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"{target}\n")


if __name__ == "__main__":
    main()
