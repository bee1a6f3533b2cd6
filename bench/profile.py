"""Where a service process spends its CPU: py-spy sampling over a benchmark, summarised.

`SampledProfile(pid, path)` runs `py-spy record` on a running process (raw collapsed stacks,
idle threads left out, so a sample is CPU the process used) until `stop()`; `summarise(path)`
turns the stacks into a few lines for docs/benchmarks.md: the share of samples by the library
of the innermost frame (where the CPU burns), and by the innermost zapgate function on the
stack (which of our steps causes it). `cpu_seconds(pid)` reads the process's user +
system CPU time from `/proc`, for a cost per unit of work next to the throughput.

py-spy is a dev dependency; without it (or without the right to trace) the profile is skipped
and the report says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process used so far (`/proc/<pid>/stat`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of the man page, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def py_spy() -> str | None:
    """The py-spy executable next to this Python, else on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class SampledProfile:
    """`py-spy record` on `pid` at `rate` Hz into `path` (raw format) until `stop()`."""

    def __init__(self, pid: int, path: Path, *, rate: int = 100) -> None:
        self.path = path
        self.error: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        executable = py_spy()
        if executable is None:
            self.error = "py-spy not installed"
            return
        argv = [
            executable,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(path),
            "--rate",
            str(rate),
            "--nolineno",
            "--full-filenames",
            "--nonblocking",
        ]
        self._log = path.with_suffix(".log")
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own argv

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if not self.path.exists():
            self.error = "py-spy wrote nothing: " + self._log.read_text(errors="replace")[-300:]


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match is not None:
            frames.append((match["function"], match["file"]))
    return frames


_STDLIB_OR_SITE = re.compile(r"/python3\.\d+/(?:(?:site|dist)-packages/)?(?P<module>.+)$")


def _module(file: str) -> str:
    """`zapgate.sender.service`, `sqlalchemy.engine.base`, `asyncio.events` from a frame's file
    (py-spy's full file names)."""
    path = file.replace("\\", "/")
    if "/zapgate/" in path:
        return "zapgate." + path.rsplit("/zapgate/", 1)[1].removesuffix(".py").replace("/", ".")
    match = _STDLIB_OR_SITE.search(path)
    path = match["module"] if match is not None else path.rsplit("/", 1)[-1]
    return path.removesuffix(".py").replace("/", ".").lstrip(".")


def _library(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "zapgate" else parts[0]


def summarise(path: Path, *, top: int = 8) -> dict[str, object]:
    """Shares of samples (0..1) from a raw py-spy file: `libraries` by the innermost frame's
    library, `steps` by the innermost zapgate function on the stack (the step of ours that
    caused the sample; the shares add up to at most 1, the rest ran outside any zapgate
    function: the event loop's I/O, libraries' own tasks), and `samples`."""
    by_library: Counter[str] = Counter()
    by_step: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        by_library[_library(_module(frames[-1][1]))] += count
        for function, file in reversed(frames):
            module = _module(file)
            # The entrypoint encloses everything: it says nothing about where the time goes.
            if module.startswith("zapgate.") and not module.endswith(".cli"):
                by_step[f"{module.removeprefix('zapgate.')}.{function}"] += count
                break
    if not total:
        return {"samples": 0, "libraries": [], "steps": []}
    return {
        "samples": total,
        "libraries": [(name, count / total) for name, count in by_library.most_common(top)],
        "steps": [(name, count / total) for name, count in by_step.most_common(top + 4)],
    }


def profile_lines(summary: dict[str, object], *, top: int = 8) -> list[str]:
    """The summary as report lines (percentages of the process's sampled CPU)."""
    if not summary.get("samples"):
        return []
    libraries = summary["libraries"]
    steps = summary["steps"]
    assert isinstance(libraries, list)  # noqa: S101 - shapes of `summarise`
    assert isinstance(steps, list)  # noqa: S101
    inside = sum(share for _, share in steps)
    return [
        f"{summary['samples']} samples; by library of the innermost frame: "
        + ", ".join(f"{name} {share:.0%}" for name, share in libraries[:top]),
        "by the innermost zapgate function (our step that caused it, with the library calls "
        "under it): "
        + ", ".join(f"`{name}` {share:.0%}" for name, share in steps)
        + f" (the {len(steps)} shown: {inside:.0%})",
    ]
