"""The SQLite store's summaries and cached answers (part of SqliteStore)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from bot.history import StoredMessage
from bot.messages import ConversationKey
from bot.store.records import ConversationSummary

P = ParamSpec("P")
R = TypeVar("R")


class SummaryTables:
    db: Database

    async def _write(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError

    def _messages(self, sql: str, parameters: tuple[Any, ...]) -> list[StoredMessage]:
        raise NotImplementedError

    async def summary(self, conversation: ConversationKey) -> ConversationSummary | None:
        row = self.db.execute(
            "SELECT summary, covers_up_to, starts_after, updated_at FROM summaries"
            " WHERE conversation = ?",
            (str(conversation),),
        ).fetchone()
        return None if row is None else ConversationSummary(*row)

    async def save_summary(
        self,
        conversation: ConversationKey,
        summary: ConversationSummary,
        replacing: int | None = None,
    ) -> None:
        key = str(conversation)
        unchanged = "true"
        guard: tuple[Any, ...] = ()
        if replacing is not None:
            unchanged = (
                "coalesce((SELECT starts_after FROM summaries WHERE conversation = ?), 0) = ?"
                " AND EXISTS (SELECT 1 FROM messages WHERE conversation = ? AND id <= ?)"
            )
            guard = (key, replacing, key, summary.starts_after)
        await self._write(
            self.db.execute,
            "INSERT INTO summaries (conversation, summary, covers_up_to, starts_after,"
            f" updated_at) SELECT ?, ?, ?, ?, ? WHERE {unchanged}"
            " ON CONFLICT(conversation) DO UPDATE SET"
            " summary = excluded.summary, covers_up_to = excluded.covers_up_to,"
            " starts_after = excluded.starts_after, updated_at = excluded.updated_at",
            (key, summary.text, summary.covers_up_to, summary.starts_after,
             summary.updated_at, *guard),
        )  # fmt: skip

    async def history_between(
        self, conversation: ConversationKey, after_id: int, up_to_id: int, limit: int
    ) -> list[StoredMessage]:
        return self._messages(
            "WHERE conversation = ? AND id > ? AND id <= ? ORDER BY id DESC LIMIT ?",
            (str(conversation), after_id, up_to_id, limit),
        )

    def _drop_summaries(self, first: str, last: str) -> None:
        """Inside a write: summaries and cached answers of conversations in [first, last)."""
        self.db.execute(
            "DELETE FROM summaries WHERE conversation >= ? AND conversation < ?", (first, last)
        )
        self.db.execute(
            "DELETE FROM response_cache WHERE channel >= ? AND channel < ?", (first, last)
        )

    async def cached_answer(self, key: str, now: float) -> str | None:
        row = self.db.execute(
            "SELECT answer FROM response_cache WHERE key = ? AND expires_at > ?", (key, now)
        ).fetchone()
        return None if row is None else str(row[0])

    async def save_answer(self, key: str, channel: str, text: str, expires_at: float) -> None:
        await self._write(
            self.db.execute,
            "INSERT INTO response_cache (key, channel, answer, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET answer = excluded.answer,"
            " expires_at = excluded.expires_at",
            (key, channel, text, expires_at),
        )

    def _prune_answers(self, now: float | None = None) -> None:
        self.db.execute(
            "DELETE FROM response_cache WHERE expires_at <= ?", (now or time.time(),)
        )
