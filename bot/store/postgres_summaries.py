"""The PostgreSQL store's summaries and cached answers (part of PostgresStore)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.history import StoredMessage
from bot.messages import ConversationKey
from bot.store.records import ConversationSummary

if TYPE_CHECKING:  # the stubs' generic; at run time the class takes no parameters
    Connection = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy


class SummaryQueries:
    pool: asyncpg.Pool

    @staticmethod
    def _message(row: Any) -> StoredMessage:
        raise NotImplementedError

    async def summary(self, conversation: ConversationKey) -> ConversationSummary | None:
        row = await self.pool.fetchrow(
            "SELECT summary, covers_up_to, starts_after, updated_at FROM summaries"
            " WHERE conversation = $1",
            str(conversation),
        )
        return None if row is None else ConversationSummary(*row)

    async def save_summary(
        self,
        conversation: ConversationKey,
        summary: ConversationSummary,
        replacing: int | None = None,
    ) -> None:
        # $6 null: always; else only if not reset (mark moved) nor forgotten meanwhile.
        await self.pool.execute(
            "INSERT INTO summaries (conversation, summary, covers_up_to, starts_after,"
            " updated_at) SELECT $1, $2, $3, $4, $5 WHERE $6::bigint IS NULL OR"
            " (coalesce((SELECT starts_after FROM summaries WHERE conversation = $1), 0) = $6"
            " AND EXISTS (SELECT 1 FROM messages WHERE conversation = $1 AND id <= $4))"
            " ON CONFLICT (conversation) DO UPDATE"
            " SET summary = excluded.summary, covers_up_to = excluded.covers_up_to,"
            " starts_after = excluded.starts_after, updated_at = excluded.updated_at",
            str(conversation), summary.text, summary.covers_up_to, summary.starts_after,
            summary.updated_at, replacing,
        )  # fmt: skip

    async def history_between(
        self, conversation: ConversationKey, after_id: int, up_to_id: int, limit: int
    ) -> list[StoredMessage]:
        rows = await self.pool.fetch(
            "SELECT id, role, content, tokens, group_id, author, tool_calls, tool_call_id, parts"
            " FROM messages WHERE conversation = $1 AND id > $2 AND id <= $3"
            " ORDER BY id DESC LIMIT $4",
            str(conversation), after_id, up_to_id, limit,
        )  # fmt: skip
        return [self._message(row) for row in reversed(rows)]

    @staticmethod
    async def _drop_summaries(connection: Connection, first: str, last: str) -> None:
        """Summaries and cached answers of conversations in [first, last)."""
        await connection.execute(
            "DELETE FROM summaries WHERE conversation >= $1 AND conversation < $2", first, last
        )
        await connection.execute(
            "DELETE FROM response_cache WHERE channel >= $1 AND channel < $2", first, last
        )

    async def cached_answer(self, key: str, now: float) -> str | None:
        answer = await self.pool.fetchval(
            "SELECT answer FROM response_cache WHERE key = $1 AND expires_at > $2", key, now
        )
        return None if answer is None else str(answer)

    async def save_answer(self, key: str, channel: str, text: str, expires_at: float) -> None:
        await self.pool.execute(
            "INSERT INTO response_cache (key, channel, answer, expires_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET"
            " answer = excluded.answer, expires_at = excluded.expires_at",
            key, channel, text, expires_at,
        )  # fmt: skip
