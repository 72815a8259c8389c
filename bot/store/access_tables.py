"""The access lists and refusal notices, in both stores (parts of their Store classes).

One row per target: an entry is on the allow list or the block list, never both, so
"block" after "allow" moves it. Reads are one small query per message (the lists are
short), which is what lets a change reach every running process at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import asyncpg
from sqlite_utils import Database

P = ParamSpec("P")
R = TypeVar("R")
# (list, kind, target): ("block", "user", "slack:U123")
AccessEntry = tuple[str, str, str]
# Every change gets a created_at later than any before it, whatever the clocks of the
# replicas say: (count, newest) then changes with every add, move and remove, and is a
# version processes compare to know when to re-read the entries.
_AFTER_NEWEST = "(SELECT coalesce(max(created_at), 0) + 0.001 FROM access)"


class SqliteAccess:
    db: Database

    async def _write(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError

    async def access_entries(self) -> list[AccessEntry]:
        rows = self.db.execute("SELECT list, kind, target FROM access ORDER BY kind, target")
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows.fetchall()]

    async def access_version(self) -> tuple[int, float]:
        row = self.db.execute("SELECT count(*), coalesce(max(created_at), 0) FROM access")
        count, newest = row.fetchone()
        return int(count), float(newest)

    async def set_access(self, list_name: str, kind: str, target: str) -> None:
        await self._write(
            self.db.execute,
            "INSERT INTO access (kind, target, list, created_at) VALUES (?, ?, ?,"
            f" max(?, {_AFTER_NEWEST}))"
            " ON CONFLICT(kind, target) DO UPDATE SET list = excluded.list,"
            " created_at = excluded.created_at",
            (kind, target, list_name, time.time()),
        )

    async def remove_access(self, kind: str, target: str) -> bool:
        cursor = await self._write(
            self.db.execute, "DELETE FROM access WHERE kind = ? AND target = ?", (kind, target)
        )
        return bool(cursor.rowcount)

    async def claim_access_notice(self, key: str) -> bool:
        cursor = await self._write(
            self.db.execute,
            "INSERT OR IGNORE INTO access_notices (key, at) VALUES (?, ?)",
            (key, time.time()),
        )
        return bool(cursor.rowcount == 1)


class PostgresAccess:
    pool: asyncpg.Pool

    async def access_entries(self) -> list[AccessEntry]:
        rows: list[Any] = await self.pool.fetch(
            "SELECT list, kind, target FROM access ORDER BY kind, target"
        )
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows]

    async def access_version(self) -> tuple[int, float]:
        row = await self.pool.fetchrow("SELECT count(*), coalesce(max(created_at), 0) FROM access")
        assert row is not None
        return int(row[0]), float(row[1])

    async def set_access(self, list_name: str, kind: str, target: str) -> None:
        await self.pool.execute(
            "INSERT INTO access (kind, target, list, created_at) VALUES ($1, $2, $3,"
            f" greatest($4, {_AFTER_NEWEST}))"
            " ON CONFLICT (kind, target) DO UPDATE SET list = excluded.list,"
            " created_at = excluded.created_at",
            kind, target, list_name, time.time(),
        )  # fmt: skip

    async def remove_access(self, kind: str, target: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM access WHERE kind = $1 AND target = $2", kind, target
        )
        return str(status).endswith(" 1")

    async def claim_access_notice(self, key: str) -> bool:
        status = await self.pool.execute(
            "INSERT INTO access_notices (key, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            key, time.time(),
        )  # fmt: skip
        return str(status).endswith(" 1")
