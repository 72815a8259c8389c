"""asyncpg or psycopg 3: the same store-shaped work through each, side by side.

    pip install -e ".[bench]"       # psycopg with its pool, for this script only
    python bench/pg_drivers.py [--operations 2000] [--concurrency 16] [--rounds 3]

Why Parley's PostgreSQL store uses asyncpg (issue 11 asked to choose by a benchmark):
this prints, for each driver, the latency of one store-shaped transaction (claim a
delivery key, append a message, read the newest 20 messages of the conversation) one
at a time, and the throughput and this process's CPU per transaction with
`--concurrency` transactions in flight over a pool of 8 connections. The SQL is the
same text for both; each driver uses its own pool (asyncpg.create_pool,
psycopg_pool.AsyncConnectionPool) and prepared statements as it does by default.
Rounds are interleaved so a slow spell of the shared machine falls on both alike;
medians and ranges are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stores import POSTGRES

SCHEMA_SQL = """
CREATE TABLE deliveries (key text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE messages (
    id bigserial PRIMARY KEY, conversation text NOT NULL, role text NOT NULL,
    content text NOT NULL, tokens integer NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation, id);
"""
CLAIM = "INSERT INTO deliveries (key) VALUES ($1) ON CONFLICT DO NOTHING RETURNING key"
APPEND = "INSERT INTO messages (conversation, role, content, tokens) VALUES ($1, $2, $3, $4)"
WINDOW = (
    "SELECT role, content, tokens FROM messages WHERE conversation = $1 ORDER BY id DESC LIMIT 20"
)
TEXT = "An ordinary question of about twenty tokens, as people ask them in a busy team."
POOL_SIZE = 8

Transaction = Callable[[str, str], Awaitable[None]]


def _psycopg_sql(sql: str) -> str:
    """psycopg's placeholders are %s where asyncpg's are $1, $2, ..."""
    for number in range(9, 0, -1):
        sql = sql.replace(f"${number}", "%s")
    return sql


async def asyncpg_driver(schema: str) -> tuple[Transaction, Callable[[], Awaitable[None]]]:
    pool = await asyncpg.create_pool(
        POSTGRES, min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings={"search_path": schema}
    )

    async def transaction(key: str, conversation: str) -> None:
        async with pool.acquire() as connection, connection.transaction():
            if await connection.fetchval(CLAIM, key) is not None:
                await connection.execute(APPEND, conversation, "user", TEXT, 20)
                await connection.fetch(WINDOW, conversation)

    return transaction, pool.close


async def psycopg_driver(schema: str) -> tuple[Transaction, Callable[[], Awaitable[None]]]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        POSTGRES,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        kwargs={"options": f"-c search_path={schema}"},
        open=False,
    )
    await pool.open(wait=True)
    claim, append, window = (_psycopg_sql(s) for s in (CLAIM, APPEND, WINDOW))

    async def transaction(key: str, conversation: str) -> None:
        async with pool.connection() as connection, connection.transaction():
            cursor = await connection.execute(claim, (key,), prepare=True)
            if await cursor.fetchone() is not None:
                await connection.execute(append, (conversation, "user", TEXT, 20), prepare=True)
                await (await connection.execute(window, (conversation,), prepare=True)).fetchall()

    return transaction, pool.close


async def sequential_p50(transaction: Transaction, operations: int) -> float:
    took = []
    for _ in range(operations):
        start = time.perf_counter()
        await transaction(uuid.uuid4().hex, "slack:T1:C1")
        took.append(time.perf_counter() - start)
    return statistics.median(took) * 1000


async def concurrent_rate(
    transaction: Transaction, operations: int, concurrency: int
) -> tuple[float, float]:
    """Transactions per second and this process's CPU (µs) per transaction."""
    remaining = iter(range(operations))

    async def worker(number: int) -> None:
        for _ in remaining:
            await transaction(uuid.uuid4().hex, f"slack:T1:C{number}")

    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    return operations / wall, used / operations * 1e6


async def fresh_schema() -> str:
    schema = f"bench_drivers_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES)
    await connection.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema};")
    await connection.execute(SCHEMA_SQL)
    await connection.close()
    return schema


async def drop(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES)
    await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    await connection.close()


def _range(values: list[float], unit: str, digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit}"
        f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        sys.exit('pg_drivers: psycopg is not installed: pip install -e ".[bench]"')
    schema = await fresh_schema()
    drivers = {"asyncpg": asyncpg_driver, "psycopg": psycopg_driver}
    figures: dict[str, dict[str, list[float]]] = {
        name: {"p50": [], "rate": [], "cpu": []} for name in drivers
    }
    try:
        for _ in range(arguments.rounds):
            for name, open_driver in drivers.items():
                transaction, close = await open_driver(schema)
                await sequential_p50(transaction, 50)  # warm-up: connections, prepares
                figures[name]["p50"].append(await sequential_p50(transaction, 300))
                rate, cpu = await concurrent_rate(
                    transaction, arguments.operations, arguments.concurrency
                )
                figures[name]["rate"].append(rate)
                figures[name]["cpu"].append(cpu)
                await close()
    finally:
        await drop(schema)
    print(
        f"one store-shaped transaction (claim, append, newest 20), {arguments.rounds} rounds,"
        f" median (range); {arguments.concurrency} in flight over a pool of {POOL_SIZE}"
    )
    print(f"{'driver':<9} {'p50 one at a time':<24} {'transactions/s':<24} CPU per transaction")
    for name, values in figures.items():
        row: dict[str, Any] = values
        print(
            f"{name:<9} {_range(row['p50'], 'ms'):<24} {_range(row['rate'], '/s', 0):<24}"
            f" {_range(row['cpu'], 'µs', 0)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
