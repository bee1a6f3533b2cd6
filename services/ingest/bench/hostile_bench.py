"""On demand (not in CI): 1,000 hostile webhooks into `zapgate-ingest run`, and its RSS growth.

    PYTHONPATH=. .venv/bin/python services/ingest/bench/hostile_bench.py [--count 1000]

Starts a real nats-server and PostgreSQL, ingest as its own process (production defaults), sends
a warm-up of ordinary webhooks, reads ingest's RSS, then sends `--count` bodies cycling through
the hostile kinds of the ingest issue (half emojis, deep nesting, huge numbers, inline media,
5,000- and 200,000-character ids, duplicate keys, NUL, invalid UTF-8, non-JSON), each with a
new id, and reads the RSS again. Prints one JSON line: statuses, RSS before/after, growth (the
target is under 50 MiB) and the size of /metrics.
"""

from __future__ import annotations

# ruff: noqa: INP001, T201 - a script, run by path; it prints its figures
import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.procs import BENCH_SECRET, infra, rss_mib, start_ingest
from zapgate.devservers.postgres import free_port
from zapgate.testkit import webhooks as samples

TARGET_MIB = 50
SERVER_ERROR = 500


def hostile(number: int) -> tuple[bytes, str]:
    """The `number`-th hostile body and its content type (a new id each time)."""
    text = samples.received_text(f"H{number}")
    kinds: list[tuple[bytes, str]] = [
        (samples.case("lone-surrogate-text").replace(b"A2", f"{number:X}".encode()), "json"),
        (samples.case("nesting-300").replace(b"0300", f"{number:04d}".encode()), "json"),
        (samples.case("moment-10e400").replace(b"0001", f"{number:04d}".encode()), "json"),
        (json.dumps(text | {"instanceId": f"{number}-" + "I" * 5000}).encode(), "json"),
        (json.dumps(text | {"instanceId": f"{number}-" + "I" * 200_000}).encode(), "json"),
        (
            samples.media_base64_body(base64_chars=300_000).replace(b"A3", f"{number:X}".encode()),
            "json",
        ),
        (b'{"instanceId":"I%d","instanceId":"dup","n":NaN,"k":"\\u0000"}' % number, "json"),
        (b'{"instanceId":"I%d","x":"caf\xe9"}' % number, "json"),
        (b"not json %d" % number, "text/plain"),
    ]
    body, kind = kinds[number % len(kinds)]
    return body, "application/json" if kind == "json" else kind


def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zapgate-hostile-") as tmp, infra(Path(tmp)) as servers:
        http_port = free_port()
        log_dir = Path(tmp) / "logs"
        log_dir.mkdir()
        ingest = start_ingest(servers, log_dir, http_port=http_port)
        url = f"http://127.0.0.1:{http_port}/webhooks/{BENCH_SECRET}"
        try:
            with httpx.Client(timeout=30) as client:
                for number in range(200):
                    client.post(url, json=samples.received_text(f"WARM{number}"))
                before = rss_mib(ingest.pid)
                statuses: Counter[int] = Counter()
                for number in range(count):
                    body, content_type = hostile(number)
                    answer = client.post(url, content=body, headers={"content-type": content_type})
                    statuses[answer.status_code] += 1
                after = rss_mib(ingest.pid)
        finally:
            ingest.stop()
    growth = after - before
    return {
        "count": count,
        "statuses": dict(statuses),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "rss_growth_mib": round(growth, 1),
        "target_mib": TARGET_MIB,
        "within_target": growth < TARGET_MIB,
        "server_errors": sum(n for status, n in statuses.items() if status >= SERVER_ERROR),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    print(json.dumps(run(parser.parse_args().count)))


if __name__ == "__main__":
    main()
