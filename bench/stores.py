"""Fresh databases for the benchmarks: a SQLite file, or a PostgreSQL schema of its own."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg

from bot.messages import ConversationKey
from bot.store import Store, open_store
from bot.store.sqlite import SqliteStore
from bot.tokens import count_message

POSTGRES = os.environ.get("PARLEY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_schemas: list[str] = []


async def fresh_url(kind: str, folder: Path, name: str) -> str:
    """PARLEY_DB for an empty database of the kind ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        return str(folder / f"{name}.db")
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    connection = await asyncpg.connect(POSTGRES)
    await connection.execute(f"CREATE SCHEMA {schema}")
    await connection.close()
    _schemas.append(schema)
    return f"{POSTGRES}?search_path={schema}"


async def fresh_store(kind: str, folder: Path, name: str) -> Store:
    return await open_store(await fresh_url(kind, folder, name))


async def drop_schemas() -> None:
    connection = await asyncpg.connect(POSTGRES)
    for schema in _schemas:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await connection.close()
    _schemas.clear()


async def fill_history(store: Store, key: ConversationKey, count: int) -> None:
    text = "An earlier message of an ordinary length, about twenty tokens or so in all."
    tokens = count_message(text)
    if isinstance(store, SqliteStore):

        def bulk() -> None:
            for index in range(count):
                store._append(str(key), "user" if index % 2 == 0 else "assistant", text, tokens)

        await store._write(bulk)
        # Fold the bulk insert into the main file now, as a long-running bot would have
        # long ago, rather than in the middle of the measurement.
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    pool = store.pool  # type: ignore[attr-defined]
    await pool.executemany(
        "INSERT INTO messages (conversation, role, content, tokens, group_id, created_at)"
        " VALUES ($1, $2, $3, $4, 0, extract(epoch from now()))",
        [(str(key), "user" if i % 2 == 0 else "assistant", text, tokens) for i in range(count)],
    )
    await pool.execute("ANALYZE messages")


if __name__ == "__main__":
    asyncio.run(drop_schemas())
