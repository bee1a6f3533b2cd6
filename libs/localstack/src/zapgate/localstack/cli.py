"""`zapgate-up` (run the local stack until Ctrl-C) and `zapgate-demo` (show every scenario).

zapgate-up                 # settings: ZAPGATE_UP_* (ports, data dir, pace), real W-API:
                           # ZAPGATE_WAPI_INSTANCE_ID, ZAPGATE_WAPI_TOKEN, ZAPGATE_PUBLIC_URL
zapgate-demo               # against a stack started by `zapgate-up` (same ZAPGATE_UP_*)
zapgate-demo --start       # start a stack (demo pace), run the demo, stop it
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from datetime import timedelta
from typing import IO

import structlog

from zapgate.localstack.demo import DemoTarget, ScenarioResult, run_demo
from zapgate.localstack.stack import (
    LOCALHOST,
    RealWapiConfig,
    Stack,
    StackConfig,
    read_nats_url,
    read_webhook_secret,
)
from zapgate.runtime.logging import configure_logging

log = structlog.get_logger("zapgate.localstack.cli")
_WATCH_S = 1.0

# The demo pace: short enough to see a tick, a cooldown and a stuck message in seconds.
DEMO_PACE = {
    "tick_interval": timedelta(seconds=2),
    "stuck_window": timedelta(seconds=3),
    "sweep_every": timedelta(seconds=1),
}


def up_main(argv: list[str] | None = None, *, out: IO[str] | None = None) -> int:
    """Start the stack, print where each part listens, stop it on SIGINT or SIGTERM."""
    argparse.ArgumentParser(prog="zapgate-up", description=__doc__.split("\n")[0]).parse_args(argv)
    out = out or sys.stdout
    configure_logging(json=False, level="WARNING")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        out.write(f"\nzapgate-up: {signal.Signals(signum).name}, stopping everything\n")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack(StackConfig(), RealWapiConfig(), out=out)
    try:
        endpoints = stack.up()
        out.write("\nzapgate is up:\n" + endpoints.describe() + "\n\nCtrl-C stops everything.\n")
        out.flush()
        while not stop.wait(_WATCH_S):
            for name, process in stack.processes.items():
                if not process.is_running:
                    out.write(
                        f"zapgate-up: {name} exited with code {process.returncode}; "
                        f"see {process.spec.log_path}\n"
                    )
                    stop.set()
    finally:
        stack.down()
    return 0


def demo_main(argv: list[str] | None = None, *, out: IO[str] | None = None) -> int:
    """Run the demo; exit 0 when every scenario passed."""
    parser = argparse.ArgumentParser(prog="zapgate-demo", description="show every scenario")
    parser.add_argument(
        "--start", action="store_true", help="start a stack at demo pace first, stop it after"
    )
    args = parser.parse_args(argv)
    out = out or sys.stdout
    configure_logging(json=False, level="WARNING")
    if RealWapiConfig().configured:
        out.write("zapgate-demo drives the simulator: unset ZAPGATE_WAPI_* to run it\n")
        return 2
    if args.start:
        config = StackConfig().model_copy(update=DEMO_PACE)
        with Stack(config, RealWapiConfig(), out=out) as stack:
            assert stack.endpoints is not None  # noqa: S101 - set by up()
            results = asyncio.run(run_demo(DemoTarget.of(stack.endpoints, config)))
    else:
        results = asyncio.run(run_demo(running_stack_target(StackConfig())))
    return report(results, out)


def running_stack_target(config: StackConfig) -> DemoTarget:
    """The demo's view of a stack `zapgate-up` started with `config` (fixed ports)."""
    secret = read_webhook_secret(config)
    return DemoTarget(
        nats_url=read_nats_url(config),
        database_url=f"postgresql+psycopg://postgres@{LOCALHOST}:{config.postgres_port}/zapgate",
        sim_url=f"http://{LOCALHOST}:{config.sim_port}",
        ingest_webhook_url=f"http://{LOCALHOST}:{config.ingest_port}/webhooks/{secret}",
        tick_interval=config.tick_interval,
        stuck_window=config.stuck_window,
        sweep_every=config.sweep_every,
    )


def report(results: list[ScenarioResult], out: IO[str]) -> int:
    for result in results:
        out.write(result.render() + "\n\n")
    passed = sum(result.passed for result in results)
    out.write(f"{passed} of {len(results)} scenarios passed\n")
    return 0 if passed == len(results) else 1
