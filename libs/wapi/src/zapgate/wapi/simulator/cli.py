"""`zapgate-wapi-sim`: run the simulator as its own process (local stack, demo, e2e)."""

from __future__ import annotations

import argparse

import uvicorn

from zapgate.runtime.logging import configure_logging
from zapgate.wapi.simulator.app import create_app
from zapgate.wapi.simulator.engine import SimulatorEngine
from zapgate.wapi.simulator.models import InstanceSpec
from zapgate.wapi.simulator.protocol import ClosableHttpProtocol


def parse_instance(text: str) -> InstanceSpec:
    """`ID:TOKEN[:PHONE]` (no phone: a connected but incomplete session)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise argparse.ArgumentTypeError("expected ID:TOKEN[:PHONE]")
    phone = parts[2] if len(parts) == 3 else None  # noqa: PLR2004 - the optional third part
    return InstanceSpec.model_validate({"instance_id": parts[0], "token": parts[1], "phone": phone})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zapgate-wapi-sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--instance", type=parse_instance, action="append", default=[], metavar="ID:TOKEN[:PHONE]"
    )
    args = parser.parse_args(argv)
    # JSON lines like every other process of the stack (its log sits next to theirs in
    # `.zapgate/logs/`); uvicorn's own plain-text logging config stays off.
    configure_logging()
    engine = SimulatorEngine()
    for spec in args.instance:
        engine.add_instance(spec)
    uvicorn.run(
        create_app(engine),
        host=args.host,
        port=args.port,
        log_config=None,
        http=ClosableHttpProtocol,  # the DISCONNECT fault closes connections without answering
        # A hanging request must not hold shutdown forever.
        timeout_graceful_shutdown=2,
    )
