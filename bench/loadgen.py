"""HTTP load generator: N keep-alive connections POSTing prepared bodies, in its own process.

    python -m bench.loadgen --url http://127.0.0.1:8000/webhooks/S --bodies b.jsonl --out r.json

A raw HTTP/1.1 client over asyncio streams on uvloop: on 2 shared cores a heavyweight client
(httpx tops out near 700 req/s) would measure itself, not the server. Each body is sent once,
connections take the next body as soon as their previous answer is in. With `--rate` the
requests are paced to that many per second instead of as fast as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import uvloop

if TYPE_CHECKING:
    from collections.abc import Iterator

_HEADER_END = b"\r\n\r\n"


@dataclass
class LoadResult:
    """What one load run saw; latencies in milliseconds, in send order per connection."""

    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "elapsed": self.elapsed,
            "latencies_ms": self.latencies_ms,
            "statuses": {str(code): count for code, count in self.statuses.items()},
            "errors": self.errors,
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(_HEADER_END)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked answers are not expected from the benchmarked apps")
    await reader.readexactly(length)
    return status


@dataclass
class _Pacer:
    rate: float | None
    started: float = field(default_factory=time.perf_counter)
    issued: int = 0

    async def wait_turn(self) -> None:
        if self.rate is None:
            return
        due = self.started + self.issued / self.rate
        self.issued += 1
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing to a rate, not synchronisation


async def _connection(url: str, bodies: Iterator[bytes], pacer: _Pacer, result: LoadResult) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    try:
        for body in bodies:
            await pacer.wait_turn()
            started = time.perf_counter()
            writer.write(head + str(len(body)).encode() + _HEADER_END + body)
            try:
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] += 1
    finally:
        writer.close()


async def drive(
    url: str, bodies: list[bytes], connections: int, rate: float | None = None
) -> LoadResult:
    """POST every body once over `connections` keep-alive connections."""
    result = LoadResult()
    shared = iter(bodies)  # one iterator: the loop is single-threaded, next() never races
    pacer = _Pacer(rate)
    started = time.perf_counter()
    await asyncio.gather(*(_connection(url, shared, pacer, result) for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="one JSON body per line")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None, help="requests per second")
    args = parser.parse_args()
    bodies = [line for line in args.bodies.read_bytes().splitlines() if line]
    result = uvloop.run(drive(args.url, bodies, args.connections, args.rate))
    args.out.write_text(json.dumps(result.as_json()))


if __name__ == "__main__":
    main()
