"""What the figures were measured on: cores, memory, CPU model, Python and nats-server."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from zapgate.devservers import NatsServer


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_kib() -> int:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def describe(store_dir: Path) -> dict[str, str]:
    """The machine as one flat mapping (rendered into docs/benchmarks.md)."""
    nats = NatsServer(store_dir)
    version = ".".join(str(part) for part in nats.version)
    memory = _memory_kib() / 2**20
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{memory:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "nats-server": version,
    }
