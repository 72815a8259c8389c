"""The PostgreSQL store's usage, limits and refusals tables (part of PostgresStore)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.store.base import LIMIT_COLUMNS
from bot.store.records import (
    GROUP_COLUMNS,
    WINDOW_SECONDS,
    Admission,
    Answer,
    UsageRecord,
    UserLimits,
    next_utc_midnight,
    utc_day,
    with_defaults,
)
from bot.store.sqlite_usage import REPORT_COLUMNS

if TYPE_CHECKING:  # the stubs' generic; at run time the class takes no parameters
    Connection = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy


class UsageQueries:
    pool: asyncpg.Pool

    async def _finish(
        self, record: UsageRecord, conversation: str, answer: Answer | None, turn_id: int | None,
        owner: str = "",
    ) -> None:  # fmt: skip
        at = record.created_at or time.time()
        # The answer is stored and the turn ended only while `owner` holds the turn (its
        # row locked meanwhile, so no replica takes it over in between).
        await self.pool.execute(
            "WITH mine AS (SELECT id FROM turns WHERE id = $18 AND owner = $20 FOR UPDATE)"
            " SELECT parley_finish_call($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " $13, $14, $15,"
            " CASE WHEN $18::bigint IS NULL OR EXISTS (SELECT 1 FROM mine) THEN $16::text END,"
            " $17, (SELECT id FROM mine), $19)",
            at, utc_day(at), record.platform, record.workspace, record.channel,
            record.user_key, record.model, record.prompt_tokens, record.completion_tokens,
            record.cached_tokens, record.tool_calls, record.cost_usd, record.latency_ms,
            record.status, conversation, answer.text if answer else None,
            answer.tokens if answer else 0, turn_id, record.kind, owner,
        )  # fmt: skip

    async def record_usage(self, record: UsageRecord) -> None:
        await self._finish(record, "", None, None)

    async def _admit(
        self,
        user_key: str,
        limits: UserLimits | None,
        now: float,
        conversation: str | None,
        text: str = "",
        tokens: int = 0,
        turn_id: int | None = None,
    ) -> Admission:
        """One round trip: parley_admit decides (exact across replicas: it takes an
        advisory lock on the user) and stores the message if admitted."""
        own = limits or UserLimits()
        row = await self.pool.fetchrow(
            "SELECT * FROM parley_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            user_key, limits is None, own.requests_per_minute, own.tokens_per_day,
            own.cost_per_day_usd, now, WINDOW_SECONDS, utc_day(now), next_utc_midnight(now),
            conversation, text, tokens, turn_id,
        )  # fmt: skip
        assert row is not None  # the function always returns its verdict
        return Admission(str(row[0]), float(row[1]))

    async def admit(self, user_key: str, defaults: UserLimits, now: float) -> Admission:
        return await self._admit(user_key, defaults, now, None)

    @staticmethod
    async def _prune_admissions(connection: Connection, now: float) -> None:
        await connection.execute("DELETE FROM admissions WHERE at <= $1", now - WINDOW_SECONDS)

    async def today(self, user_key: str, now: float) -> tuple[int, float]:
        row = await self.pool.fetchrow(
            "SELECT tokens, cost_usd FROM daily_totals WHERE user_key = $1 AND day = $2",
            user_key, utc_day(now),
        )  # fmt: skip
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def user_limits(self, user_key: str, defaults: UserLimits) -> UserLimits:
        row = await self.pool.fetchrow(
            "SELECT requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits WHERE user_key = $1",
            user_key,
        )
        return defaults if row is None else with_defaults(tuple(row), defaults)

    async def overridden_limits(self, defaults: UserLimits) -> list[tuple[str, UserLimits]]:
        rows = await self.pool.fetch(
            "SELECT user_key, requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits ORDER BY user_key"
        )
        return [(row[0], with_defaults(tuple(row[1:]), defaults)) for row in rows]

    async def set_user_limit(self, user_key: str, name: str, value: float | None) -> None:
        if name not in LIMIT_COLUMNS:
            raise ValueError(f"unknown limit {name!r}")
        stored: object = value
        if name == "blocked":
            stored = bool(value)
        elif value is not None and name != "cost_per_day_usd":
            stored = int(value)
        elif value is not None:
            stored = float(value)
        await self.pool.execute(
            f"INSERT INTO limits (user_key, {name}) VALUES ($1, $2)"
            f" ON CONFLICT (user_key) DO UPDATE SET {name} = excluded.{name}",
            user_key, stored,
        )  # fmt: skip

    async def usage_report(self, since: float, by: str, limit: int = 0) -> list[dict[str, Any]]:
        group = GROUP_COLUMNS[by]
        order = "key" if by == "day" else "total_tokens DESC, key"
        sql = (
            f"SELECT {group} AS key, {REPORT_COLUMNS} FROM usage WHERE created_at >= $1"
            f" GROUP BY 1 ORDER BY {order}" + (" LIMIT $2" if limit else "")
        )
        rows = await self.pool.fetch(sql, *((since, limit) if limit else (since,)))
        return [_plain(dict(row.items())) for row in rows]

    async def refusal_counts(self, since: float) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT kind, count(*) FROM refusals WHERE at >= $1 GROUP BY kind", since
        )
        return {str(row[0]): int(row[1]) for row in rows}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Sums of bigint columns come back as Decimal: reports want int, as from SQLite."""
    return {
        name: int(value) if type(value).__name__ == "Decimal" else value
        for name, value in row.items()
    }
