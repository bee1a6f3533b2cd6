"""`zapgate-dead-letters`: the messages consumers gave up on, for an operator.

    zapgate-dead-letters                       # every runtime `*_dead_letters` table, newest first
    zapgate-dead-letters --table sender_dead_letters --consumer sender-commands --limit 20
    zapgate-dead-letters --json                # one JSON object per line, payload included

The database URL comes from `--database-url` or `$ZAPGATE_DATABASE_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import TYPE_CHECKING

import sqlalchemy as sa

from zapgate.runtime.db import create_engine
from zapgate.runtime.dead_letters import DeadLetter, SqlDeadLetterStore, dead_letter_table
from zapgate.runtime.migrate_cli import DATABASE_URL_ENV

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

TABLE_SUFFIX = "_dead_letters"
_REASON_CHARS = 120


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zapgate-dead-letters", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV))
    parser.add_argument("--table", action="append", default=[], help="(default: all)")
    parser.add_argument("--consumer", default=None, help="only this durable consumer")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="JSON lines with the payload")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error(f"--database-url or ${DATABASE_URL_ENV} is required")
    rows = asyncio.run(_dead_letters(args.database_url, args.table, args.consumer, args.limit))
    out = sys.stdout
    if args.json:
        for table, row in rows:
            out.write(json.dumps(_as_json(table, row), ensure_ascii=False) + "\n")
        return 0
    if not rows:
        out.write("no dead letters\n")
        return 0
    for table, row in rows:
        when = row.dead_lettered_at.isoformat(timespec="seconds") if row.dead_lettered_at else "-"
        out.write(
            f"{when}  {table}  {row.consumer}  {row.stream}#{row.sequence}  {row.subject}  "
            f"{row.reason_code} x{row.attempts}  {row.reason[:_REASON_CHARS]}\n"
        )
    return 0


async def _dead_letters(
    url: str, tables: list[str], consumer: str | None, limit: int
) -> list[tuple[str, DeadLetter]]:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        names = tables or await _tables(engine)
        found: list[tuple[str, DeadLetter]] = []
        for name in names:
            store = SqlDeadLetterStore(engine, dead_letter_table(sa.MetaData(), name))
            found += [(name, row) for row in await store.list_dead(consumer=consumer, limit=limit)]
    finally:
        await engine.dispose()
    found.sort(key=lambda item: (item[1].dead_lettered_at, item[1].sequence), reverse=True)
    return found[:limit]


async def _tables(engine: AsyncEngine) -> list[str]:
    # Tables in the runtime's shape only (a service may keep another table under this suffix).
    query = sa.text(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name LIKE :pattern "
        "AND column_name IN ('consumer', 'stream_seq', 'dead_lettered_at', 'reason_code') "
        "GROUP BY table_name HAVING count(*) = 4 ORDER BY 1"
    )
    async with engine.connect() as conn:
        result = await conn.execute(query, {"pattern": f"%{TABLE_SUFFIX}"})
        return [str(name) for name in result.scalars()]


def _as_json(table: str, row: DeadLetter) -> dict[str, object]:
    try:
        payload: dict[str, str] = {"text": row.payload.decode("utf-8")}
    except UnicodeDecodeError:
        payload = {"base64": base64.b64encode(row.payload).decode("ascii")}
    return {
        "table": table,
        "consumer": row.consumer,
        "stream": row.stream,
        "stream_seq": row.sequence,
        "subject": row.subject,
        "reason_code": row.reason_code,
        "reason": row.reason,
        "attempts": row.attempts,
        "num_delivered": row.num_delivered,
        "first_failed_at": row.first_failed_at.isoformat(),
        "last_failed_at": row.last_failed_at.isoformat(),
        "dead_lettered_at": row.dead_lettered_at.isoformat() if row.dead_lettered_at else None,
        "headers": row.headers,
        "payload": payload,
    }


if __name__ == "__main__":
    raise SystemExit(main())
