"""The store's usage, limits and refusals tables (part of Store; SQL stays in store*)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlite_utils import Database

GROUP_COLUMNS = {
    "user": "user_key",
    "channel": "platform || ':' || workspace || ':' || channel",
    "model": "model",
    "day": "day",
    "platform": "platform",
}
WINDOW_SECONDS = 60.0


def utc_day(at: float) -> str:
    # Unix time has exactly 86,400 seconds a day, so the day's number names it.
    return _day_name(int(at // 86400))


@lru_cache(maxsize=8)
def _day_name(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86400, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    platform: str
    workspace: str
    channel: str
    user_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    tool_calls: int
    cost_usd: float | None
    latency_ms: float
    status: str  # "ok" or a ModelError kind
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class UserLimits:
    """Limits for one user; None means "the default from config"."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_day_usd: float | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """The store's verdict on one request: admitted, or which limit refused it."""

    refused: str = ""  # "", "blocked", "requests_per_minute", "tokens_per_day", "cost_per_day"
    retry_at: float = 0.0  # when the refused limit frees up (epoch seconds)


class UsageTables:
    db: Database

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction, or the one already open: its caller's rollback covers us,
        so a savepoint of our own would only cost two statements per call."""
        if self.db.conn.in_transaction:
            yield
        else:
            with self.db.atomic():
                yield

    def record_usage(self, record: UsageRecord) -> None:
        at = record.created_at or time.time()
        day = utc_day(at)
        tokens = record.prompt_tokens + record.completion_tokens
        with self.atomic():
            self.db.execute(
                "INSERT INTO usage (created_at, day, platform, workspace, channel, user_key,"
                " model, prompt_tokens, completion_tokens, cached_tokens, tool_calls,"
                " cost_usd, latency_ms, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    at, day, record.platform, record.workspace, record.channel,
                    record.user_key, record.model, record.prompt_tokens,
                    record.completion_tokens, record.cached_tokens, record.tool_calls,
                    record.cost_usd, record.latency_ms, record.status,
                ),
            )  # fmt: skip
            self.db.execute(
                "INSERT INTO daily_totals (user_key, day, tokens, cost_usd) VALUES (?,?,?,?)"
                " ON CONFLICT(user_key, day) DO UPDATE SET tokens = tokens + excluded.tokens,"
                " cost_usd = cost_usd + excluded.cost_usd",
                (record.user_key, day, tokens, record.cost_usd or 0.0),
            )

    def admit(self, user_key: str, defaults: UserLimits, now: float) -> Admission:
        """Decide one request in one transaction, exact across processes."""
        with self.atomic():
            # Writing first takes SQLite's write lock at once, so no other process can
            # count the same window between our count and our insert.
            self.db.execute(
                "DELETE FROM admissions WHERE user_key = ? AND at <= ?",
                (user_key, now - WINDOW_SECONDS),
            )
            verdict = self._judge(user_key, self.user_limits(user_key, defaults), now)
            if verdict.refused:
                self.db.execute(
                    "INSERT INTO refusals (at, user_key, kind) VALUES (?, ?, ?)",
                    (now, user_key, verdict.refused),
                )
            else:
                self.db.execute(
                    "INSERT INTO admissions (user_key, at) VALUES (?, ?)", (user_key, now)
                )
        return verdict

    def _judge(self, user_key: str, limits: UserLimits, now: float) -> Admission:
        if limits.blocked:
            return Admission("blocked")
        rpm = limits.requests_per_minute or 0
        if rpm:
            # Counting stops at the limit: a check costs at most `rpm` index steps, not
            # one per request the user made this minute. Newest first, so the oldest
            # counted is the one whose expiry brings the count below the limit.
            count, oldest = self.db.execute(
                "SELECT count(*), min(at) FROM (SELECT at FROM admissions WHERE user_key = ?"
                " ORDER BY at DESC LIMIT ?)",
                (user_key, rpm),
            ).fetchone()
            if count >= rpm:
                return Admission("requests_per_minute", float(oldest) + WINDOW_SECONDS)
        tokens, cost = self.today(user_key, now)
        next_day = _next_utc_midnight(now)
        if limits.tokens_per_day and tokens >= limits.tokens_per_day:
            return Admission("tokens_per_day", next_day)
        if limits.cost_per_day_usd and cost >= limits.cost_per_day_usd:
            return Admission("cost_per_day", next_day)
        return Admission()

    def prune_admissions(self, now: float) -> int:
        """Drop admissions older than the window for every user: each admission drops
        its own user's, but users who stop writing would leave theirs behind."""
        cursor = self.db.execute("DELETE FROM admissions WHERE at <= ?", (now - WINDOW_SECONDS,))
        return int(cursor.rowcount)

    def today(self, user_key: str, now: float) -> tuple[int, float]:
        row = self.db.execute(
            "SELECT tokens, cost_usd FROM daily_totals WHERE user_key = ? AND day = ?",
            (user_key, utc_day(now)),
        ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def user_limits(self, user_key: str, defaults: UserLimits) -> UserLimits:
        row = self.db.execute(
            "SELECT requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits WHERE user_key = ?",
            (user_key,),
        ).fetchone()
        return defaults if row is None else _with_defaults(row, defaults)

    def overridden_limits(self, defaults: UserLimits) -> list[tuple[str, UserLimits]]:
        """Every user with limits of their own, by key, the defaults filled in."""
        rows = self.db.execute(
            "SELECT user_key, requests_per_minute, tokens_per_day, cost_per_day_usd, blocked"
            " FROM limits ORDER BY user_key"
        ).fetchall()
        return [(row[0], _with_defaults(row[1:], defaults)) for row in rows]

    def set_user_limit(self, user_key: str, name: str, value: float | None) -> None:
        assert name in ("requests_per_minute", "tokens_per_day", "cost_per_day_usd", "blocked")
        self.db.execute(
            f"INSERT INTO limits (user_key, {name}) VALUES (?, ?)"
            f" ON CONFLICT(user_key) DO UPDATE SET {name} = excluded.{name}",
            (user_key, value),
        )

    def usage_report(self, since: float, by: str, limit: int = 0) -> list[dict[str, Any]]:
        """Usage per group since a time, biggest token users first."""
        group = GROUP_COLUMNS[by]
        order = "key" if by == "day" else "total_tokens DESC, key"
        cursor = self.db.execute(
            f"SELECT {group} AS key, count(*) AS requests,"
            " sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,"
            " sum(prompt_tokens + completion_tokens) AS total_tokens,"
            " sum(cached_tokens) AS cached_tokens, sum(tool_calls) AS tool_calls,"
            # One unknown price makes the group's cost unknown: never a silent 0.
            " CASE WHEN count(cost_usd) = count(*) THEN sum(cost_usd) END AS cost_usd,"
            " sum(status != 'ok') AS errors"
            f" FROM usage WHERE created_at >= ? GROUP BY key ORDER BY {order}"
            + (" LIMIT ?" if limit else ""),
            (since, limit) if limit else (since,),
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def refusal_counts(self, since: float) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT kind, count(*) FROM refusals WHERE at >= ? GROUP BY kind", (since,)
        ).fetchall()
        return {str(kind): int(count) for kind, count in rows}


def _with_defaults(row: tuple[Any, ...], defaults: UserLimits) -> UserLimits:
    """A limits row (rpm, tpd, cost, blocked); NULL means the default."""
    return UserLimits(
        defaults.requests_per_minute if row[0] is None else int(row[0]),
        defaults.tokens_per_day if row[1] is None else int(row[1]),
        defaults.cost_per_day_usd if row[2] is None else float(row[2]),
        bool(row[3]),
    )


def _next_utc_midnight(now: float) -> float:
    return (int(now // 86400) + 1) * 86400.0  # the day utc_day names ends here
