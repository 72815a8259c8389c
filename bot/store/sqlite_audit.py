"""The SQLite store's audit log, budget alert claims and spend sums (part of SqliteStore)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from bot.store.audit_rows import AUDIT_COLUMNS, AUDIT_PAGE, AuditEntry, audit_filter
from bot.store.sqlite_usage import REPORT_COLUMNS

P = ParamSpec("P")
R = TypeVar("R")


class AuditTables:
    db: Database
    path: str

    def _report(self, sql: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        raise NotImplementedError  # UsageTables': a query on a connection of its own

    async def _sum(self, sql: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        """A read over many usage rows (a month's): off the loop for a file database."""
        if self.path == ":memory:":  # only this connection sees that database
            cursor = self.db.execute(sql, parameters)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return await asyncio.to_thread(self._report, sql, parameters)

    async def _write(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._write(
            self.db.execute,
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.at, entry.actor, entry.platform, entry.workspace, entry.channel,
             entry.action, entry.target, entry.before, entry.after),
        )  # fmt: skip

    async def audit_entries(
        self, since: float, user: str = "", action: str = "", limit: int = AUDIT_PAGE
    ) -> list[AuditEntry]:
        where, parameters = audit_filter(user, action)
        rows = self.db.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE at >= ?{where} ORDER BY at DESC, id DESC"
            " LIMIT ?",
            (since, *parameters, limit),
        ).fetchall()
        return [AuditEntry(*row) for row in rows]

    async def prune_audit(self, before: float) -> int:
        cursor = await self._write(self.db.execute, "DELETE FROM audit WHERE at < ?", (before,))
        return int(cursor.rowcount)

    async def claim_alert(self, key: str, at: float) -> bool:
        cursor = await self._write(
            self.db.execute,
            "INSERT OR IGNORE INTO budget_alerts (key, at) VALUES (?, ?)",
            (key, at),
        )
        return cursor.rowcount == 1

    async def record_refusal(self, user_key: str, kind: str, at: float) -> None:
        await self._write(
            self.db.execute,
            "INSERT INTO refusals (at, user_key, kind) VALUES (?, ?, ?)",
            (at, user_key, kind),
        )

    async def spend_since(self, since: float, platform: str = "", workspace: str = "") -> float:
        scope = " AND platform = ? AND workspace = ?" if platform else ""
        [row] = await self._sum(
            f"SELECT coalesce(sum(cost_usd), 0) AS spent FROM usage WHERE created_at >= ?{scope}",
            (since, platform, workspace) if platform else (since,),
        )
        return float(row["spent"])

    async def channel_moderation(self, platform: str, workspace: str, channel: str) -> str:
        row = self.db.execute(
            "SELECT moderation FROM channel_settings WHERE platform = ? AND workspace = ?"
            " AND channel = ?",
            (platform, workspace, channel),
        ).fetchone()
        return str(row[0] or "") if row else ""

    async def user_usage(self, user_key: str, since: float) -> list[dict[str, Any]]:
        return await self._sum(
            f"SELECT model AS key, {REPORT_COLUMNS} FROM usage WHERE user_key = ?"
            " AND created_at >= ? GROUP BY model ORDER BY total_tokens DESC, model",
            (user_key, since),
        )
