"""The PostgreSQL store's audit log, budget alert claims and spend sums (part of
PostgresStore)."""

from __future__ import annotations

from typing import Any

import asyncpg

from bot.store.audit_rows import AUDIT_COLUMNS, AUDIT_PAGE, AuditEntry, audit_filter
from bot.store.sqlite_usage import REPORT_COLUMNS


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class AuditQueries:
    pool: asyncpg.Pool

    async def add_audit(self, entry: AuditEntry) -> None:
        await self.pool.execute(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            entry.at, entry.actor, entry.platform, entry.workspace, entry.channel,
            entry.action, entry.target, entry.before, entry.after,
        )  # fmt: skip

    async def audit_entries(
        self, since: float, user: str = "", action: str = "", limit: int = AUDIT_PAGE
    ) -> list[AuditEntry]:
        where, parameters = audit_filter(user, action, mark="$")
        rows = await self.pool.fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE at >= $1{where}"
            f" ORDER BY at DESC, id DESC LIMIT ${len(parameters) + 2}",
            since, *parameters, limit,
        )  # fmt: skip
        return [AuditEntry(*row) for row in rows]

    async def prune_audit(self, before: float) -> int:
        return _count(await self.pool.execute("DELETE FROM audit WHERE at < $1", before))

    async def claim_alert(self, key: str, at: float) -> bool:
        status = await self.pool.execute(
            "INSERT INTO budget_alerts (key, at) VALUES ($1, $2) ON CONFLICT DO NOTHING", key, at
        )
        return _count(status) == 1

    async def record_refusal(self, user_key: str, kind: str, at: float) -> None:
        await self.pool.execute(
            "INSERT INTO refusals (at, user_key, kind) VALUES ($1, $2, $3)", at, user_key, kind
        )

    async def spend_since(self, since: float, platform: str = "", workspace: str = "") -> float:
        if platform:
            spent = await self.pool.fetchval(
                "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE created_at >= $1"
                " AND platform = $2 AND workspace = $3",
                since, platform, workspace,
            )  # fmt: skip
        else:
            spent = await self.pool.fetchval(
                "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE created_at >= $1", since
            )
        return float(spent)

    async def channel_moderation(self, platform: str, workspace: str, channel: str) -> str:
        value = await self.pool.fetchval(
            "SELECT moderation FROM channel_settings WHERE platform = $1 AND workspace = $2"
            " AND channel = $3",
            platform, workspace, channel,
        )  # fmt: skip
        return str(value or "")

    async def user_usage(self, user_key: str, since: float) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT model AS key, {REPORT_COLUMNS} FROM usage WHERE user_key = $1"
            " AND created_at >= $2 GROUP BY model ORDER BY total_tokens DESC, model",
            user_key, since,
        )  # fmt: skip
        return [
            {k: int(v) if type(v).__name__ == "Decimal" else v for k, v in row.items()}
            for row in rows
        ]
