"""python -m bot migrate --from PATH --to URL: copy a SQLite database into PostgreSQL.

Everything a team would miss is copied: history (with its ids, which resets refer
to), conversations, channel settings, limits, usage, daily totals, refusals, access
lists and their refusal notices, and delivery keys (so a platform's retry of an old
event is still recognised). Rows go in with ON CONFLICT DO NOTHING, so running it
again copies only what is missing.
Admissions (a minute's worth) and turns (messages being answered) are left behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bot.config import ConfigError
from bot.store.audit_rows import AUDIT_COLUMNS
from bot.store.postgres import PostgresStore
from bot.store.url import open_store, parse_store_url

BATCH = 1000


@dataclass(frozen=True)
class Table:
    name: str
    source_columns: str  # as SQLite names them
    target_columns: str  # as PostgreSQL names them
    conflict: str  # the key that makes a second copy of a row a no-op
    identity: bool = False  # keep SQLite's ids (OVERRIDING SYSTEM VALUE)
    convert: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda row: row


def _booleans(*positions: int) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(bool(v) if i in positions else v for i, v in enumerate(row))

    return convert


MESSAGE_COLUMNS = (
    "conversation, role, content, tokens, group_id, {}, tool_calls, tool_call_id, parts"
)
TABLES = [
    Table(
        "messages", "id, " + MESSAGE_COLUMNS.format("user") + ", created_at",
        "id, " + MESSAGE_COLUMNS.format("author") + ", created_at", "id", identity=True,
    ),
    Table("conversations", "conversation, context_start, trim_noticed",
          "conversation, context_start, trim_noticed", "conversation", convert=_booleans(2)),
    Table("channel_settings", "platform, workspace, channel, system_prompt, model, moderation",
          "platform, workspace, channel, system_prompt, model, moderation",
          "platform, workspace, channel"),
    Table("deliveries", "key, seen_at", "key, seen_at", "key"),
    Table(
        "usage",
        "id, created_at, day, platform, workspace, channel, user_key, model, prompt_tokens,"
        " completion_tokens, cached_tokens, tool_calls, cost_usd, latency_ms, status, kind",
        "id, created_at, day, platform, workspace, channel, user_key, model, prompt_tokens,"
        " completion_tokens, cached_tokens, tool_calls, cost_usd, latency_ms, status, kind",
        "id", identity=True,
    ),
    Table("daily_totals", "user_key, day, tokens, cost_usd", "user_key, day, tokens, cost_usd",
          "user_key, day"),
    Table("limits", "user_key, requests_per_minute, tokens_per_day, cost_per_day_usd, blocked",
          "user_key, requests_per_minute, tokens_per_day, cost_per_day_usd, blocked",
          "user_key", convert=_booleans(4)),
    Table("summaries", "conversation, summary, covers_up_to, starts_after, updated_at",
          "conversation, summary, covers_up_to, starts_after, updated_at", "conversation"),
    Table("refusals", "id, at, user_key, kind", "id, at, user_key, kind", "id", identity=True),
    Table("audit", "id, " + AUDIT_COLUMNS, "id, " + AUDIT_COLUMNS, "id", identity=True),
    Table("budget_alerts", "key, at", "key, at", "key"),
    Table("access", "kind, target, list, created_at", "kind, target, list, created_at",
          "kind, target"),
    Table("access_notices", "key, at", "key, at", "key"),
]  # fmt: skip


def _batches(cursor: sqlite3.Cursor) -> Iterator[list[tuple[Any, ...]]]:
    while rows := cursor.fetchmany(BATCH):
        yield rows


async def _copy(source: sqlite3.Connection, target: PostgresStore, table: Table) -> tuple[int, int]:
    """(rows in the source, rows newly copied)."""
    width = len(table.target_columns.split(","))
    placeholders = ", ".join(f"${n}" for n in range(1, width + 1))
    overriding = " OVERRIDING SYSTEM VALUE" if table.identity else ""
    insert = (
        f"INSERT INTO {table.name} ({table.target_columns}){overriding} VALUES ({placeholders})"
        f" ON CONFLICT ({table.conflict}) DO NOTHING"
    )
    count = f"SELECT count(*) FROM {table.name}"
    before = int(await target.pool.fetchval(count))
    total = 0
    async with target.pool.acquire() as connection, connection.transaction():
        cursor = source.execute(f"SELECT {table.source_columns} FROM {table.name}")
        for rows in _batches(cursor):
            total += len(rows)
            await connection.executemany(insert, [table.convert(row) for row in rows])
        if table.identity:
            # New rows must be numbered after the copied ones.
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                f" greatest((SELECT max(id) FROM {table.name}), 1))"
            )
    return total, int(await target.pool.fetchval(count)) - before


async def _refuse_other_history(source: sqlite3.Connection, target: PostgresStore) -> None:
    """A target that has history of its own (a replica already ran on it) would have
    ids that clash with the copied ones: refuse rather than skip rows silently."""
    row = await target.pool.fetchrow(
        "SELECT id, conversation, content FROM messages ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return
    same = source.execute(
        "SELECT 1 FROM messages WHERE id = ? AND conversation = ? AND content = ?", tuple(row)
    ).fetchone()
    if same is None:
        raise ConfigError(
            "migrate: the PostgreSQL database already holds history that is not from this "
            "SQLite file; migrate into a new, empty database"
        )


async def migrate(source_path: str, target_url: str) -> list[tuple[str, int, int]]:
    """Copy every table; (table, rows in the source, rows copied now) for each."""
    source_address = parse_store_url(source_path)
    if source_address.kind != "sqlite" or parse_store_url(target_url).kind != "postgresql":
        raise ConfigError("migrate: --from is a SQLite file, --to a postgresql:// URL")
    # Opening through the store migrates the SQLite schema to the current version.
    sqlite_store = await open_store(source_address.target)
    await sqlite_store.close()
    target = await open_store(target_url)
    assert isinstance(target, PostgresStore)
    source = sqlite3.connect(f"file:{source_address.target}?mode=ro", uri=True)
    try:
        await _refuse_other_history(source, target)
        return [(table.name, *await _copy(source, target, table)) for table in TABLES]
    finally:
        source.close()
        await target.close()
