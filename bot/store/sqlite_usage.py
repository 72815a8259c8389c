"""The SQLite store's usage, limits and refusals tables (part of SqliteStore)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from bot.store.base import LIMIT_COLUMNS
from bot.store.records import (
    GROUP_COLUMNS,
    WINDOW_SECONDS,
    Admission,
    UsageRecord,
    UserLimits,
    judge,
    utc_day,
    with_defaults,
)

BUSY_SECONDS = 10.0
P = ParamSpec("P")
R = TypeVar("R")

# Shared with PostgreSQL: one unknown price makes the group's cost unknown, never a
# silent 0.
REPORT_COLUMNS = (
    "count(*) AS requests,"
    " sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,"
    " sum(prompt_tokens + completion_tokens) AS total_tokens,"
    " sum(cached_tokens) AS cached_tokens, sum(tool_calls) AS tool_calls,"
    " CASE WHEN count(cost_usd) = count(*) THEN sum(cost_usd) END AS cost_usd,"
    " sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors"
)


class UsageTables:
    db: Database
    path: str

    async def _write(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError

    def _record_usage(self, record: UsageRecord) -> None:
        at = record.created_at or time.time()
        day = utc_day(at)
        tokens = record.prompt_tokens + record.completion_tokens
        self.db.execute(
            "INSERT INTO usage (created_at, day, platform, workspace, channel, user_key,"
            " model, prompt_tokens, completion_tokens, cached_tokens, tool_calls,"
            " cost_usd, latency_ms, status, kind) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                at, day, record.platform, record.workspace, record.channel,
                record.user_key, record.model, record.prompt_tokens,
                record.completion_tokens, record.cached_tokens, record.tool_calls,
                record.cost_usd, record.latency_ms, record.status, record.kind,
            ),
        )  # fmt: skip
        self.db.execute(
            "INSERT INTO daily_totals (user_key, day, tokens, cost_usd) VALUES (?,?,?,?)"
            " ON CONFLICT(user_key, day) DO UPDATE SET tokens = tokens + excluded.tokens,"
            " cost_usd = cost_usd + excluded.cost_usd",
            (record.user_key, day, tokens, record.cost_usd or 0.0),
        )

    async def record_usage(self, record: UsageRecord) -> None:
        await self._write(self._record_usage, record)

    def _admit(self, user_key: str, defaults: UserLimits, now: float) -> Admission:
        """Inside a write transaction (BEGIN IMMEDIATE holds SQLite's write lock), so no
        other process counts the same window between our count and our insert."""
        self.db.execute(
            "DELETE FROM admissions WHERE user_key = ? AND at <= ?",
            (user_key, now - WINDOW_SECONDS),
        )
        limits = self._user_limits(user_key, defaults)
        verdict = judge(
            limits, self._recent_requests(user_key, limits), self._today(user_key, now), now
        )
        if verdict.refused:
            self.db.execute(
                "INSERT INTO refusals (at, user_key, kind) VALUES (?, ?, ?)",
                (now, user_key, verdict.refused),
            )
        else:
            self.db.execute("INSERT INTO admissions (user_key, at) VALUES (?, ?)", (user_key, now))
        return verdict

    async def admit(self, user_key: str, defaults: UserLimits, now: float) -> Admission:
        return await self._write(self._admit, user_key, defaults, now)

    def _recent_requests(self, user_key: str, limits: UserLimits) -> tuple[int, float | None]:
        rpm = limits.requests_per_minute or 0
        if limits.blocked or not rpm:
            return 0, None
        # Counting stops at the limit: a check costs at most `rpm` index steps, not one
        # per request the user made this minute. Newest first, so the oldest counted
        # is the one whose expiry brings the count below the limit.
        count, oldest = self.db.execute(
            "SELECT count(*), min(at) FROM (SELECT at FROM admissions WHERE user_key = ?"
            " ORDER BY at DESC LIMIT ?)",
            (user_key, rpm),
        ).fetchone()
        return int(count), oldest

    def _prune_admissions(self, now: float) -> int:
        """Drop admissions older than the window for every user: each admission drops
        its own user's, but users who stop writing would leave theirs behind."""
        cursor = self.db.execute("DELETE FROM admissions WHERE at <= ?", (now - WINDOW_SECONDS,))
        return int(cursor.rowcount)

    def _today(self, user_key: str, now: float) -> tuple[int, float]:
        row = self.db.execute(
            "SELECT tokens, cost_usd FROM daily_totals WHERE user_key = ? AND day = ?",
            (user_key, utc_day(now)),
        ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    async def today(self, user_key: str, now: float) -> tuple[int, float]:
        return self._today(user_key, now)

    def _user_limits(self, user_key: str, defaults: UserLimits) -> UserLimits:
        row = self.db.execute(
            "SELECT requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits WHERE user_key = ?",
            (user_key,),
        ).fetchone()
        return defaults if row is None else with_defaults(row, defaults)

    async def user_limits(self, user_key: str, defaults: UserLimits) -> UserLimits:
        return self._user_limits(user_key, defaults)

    async def overridden_limits(self, defaults: UserLimits) -> list[tuple[str, UserLimits]]:
        rows = self.db.execute(
            "SELECT user_key, requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits ORDER BY user_key"
        ).fetchall()
        return [(row[0], with_defaults(row[1:], defaults)) for row in rows]

    async def set_user_limit(self, user_key: str, name: str, value: float | None) -> None:
        if name not in LIMIT_COLUMNS:
            raise ValueError(f"unknown limit {name!r}")
        await self._write(
            self.db.execute,
            f"INSERT INTO limits (user_key, {name}) VALUES (?, ?)"
            f" ON CONFLICT(user_key) DO UPDATE SET {name} = excluded.{name}",
            (user_key, value),
        )

    async def usage_report(self, since: float, by: str, limit: int = 0) -> list[dict[str, Any]]:
        group = GROUP_COLUMNS[by]
        order = "key" if by == "day" else "total_tokens DESC, key"
        sql = (
            f"SELECT {group} AS key, {REPORT_COLUMNS} FROM usage WHERE created_at >= ?"
            f" GROUP BY key ORDER BY {order}" + (" LIMIT ?" if limit else "")
        )
        parameters = (since, limit) if limit else (since,)
        if self.path == ":memory:":  # only this connection sees that database
            cursor = self.db.execute(sql, parameters)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        # A long period sums many rows: off the loop, on a connection of its own.
        return await asyncio.to_thread(self._report, sql, parameters)

    def _report(self, sql: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        own = sqlite3.connect(self.path, timeout=BUSY_SECONDS)
        try:
            cursor = own.execute(sql, parameters)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            own.close()

    async def refusal_counts(self, since: float) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT kind, count(*) FROM refusals WHERE at >= ? GROUP BY kind", (since,)
        ).fetchall()
        return {str(kind): int(count) for kind, count in rows}
