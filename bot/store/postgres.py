"""The shared store: PostgreSQL through asyncpg, for several Parley replicas.

asyncpg rather than psycopg 3: every store call here is a handful of short
statements, and asyncpg's binary protocol and per-connection prepared statement
cache spend less CPU per round trip (bench/store_bench.py prints both stores).

What holds in one process holds across replicas because the database decides it:
delivery keys are primary keys (one INSERT wins), a user's admission takes a
transaction-scoped advisory lock on that user (no two replicas count the same
window at once), and a conversation's messages take turns in the turns table.
Nothing is cached here: every replica reads history and settings afresh, so a
write on one is seen by the next message on any (measured: a 100-message window
costs one round trip).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.config import ConfigError
from bot.history import StoredMessage, Window
from bot.messages import ConversationKey
from bot.store.access_tables import PostgresAccess
from bot.store.base import SETTING_COLUMNS, ToolCall, ToolResult
from bot.store.postgres_audit import AuditQueries
from bot.store.postgres_schema import migrate
from bot.store.postgres_summaries import SummaryQueries
from bot.store.postgres_usage import UsageQueries
from bot.store.records import (
    DEDUPE_KEEP_SECONDS,
    Admission,
    Answer,
    StaleTurn,
    Turn,
    UsageRecord,
)
from bot.store.url import StoreAddress

POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 0.8
_COLUMNS = "id, role, content, tokens, group_id, author, tool_calls, tool_call_id, parts"
# Leases are set and compared on the database's clock: replicas on machines whose
# clocks disagree by more than a lease would otherwise take over each other's live
# turns, or answer a conversation's messages out of order.
DB_NOW = "extract(epoch from clock_timestamp())"

R = TypeVar("R")
if TYPE_CHECKING:  # the stubs' generic; at run time the class takes no parameters
    Connection = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy


def _row_to_message(row: Any) -> StoredMessage:
    tool_calls = json.loads(row[6]) if row[6] else None
    group_id = row[4] or row[0]  # 0: a group of its own
    return StoredMessage(
        row[0], row[1], row[2], row[3], group_id, row[5], tool_calls, row[7], row[8] or ""
    )


def _count(status: str) -> int:
    """asyncpg's command status ("INSERT 0 1", "DELETE 3") -> the row count."""
    return int(status.rsplit(" ", 1)[-1])


def _server_settings(url: str) -> dict[str, str]:
    # The same trade as SQLite's synchronous=NORMAL: a commit returns before the
    # server flushes its log to disk (measured: 3.7 ms per commit here, three commits
    # a message). A crash of the database server's machine may lose the last fraction
    # of a second of writes; it never corrupts, and a crash of Parley loses nothing.
    # ?synchronous_commit=on in the URL asks for a flush per commit instead.
    return {} if "synchronous_commit=" in url else {"synchronous_commit": "off"}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: Parley sets no session
    state (no LISTEN, no session locks, no SET). asyncpg's default reset is one more
    round trip on every store call."""


def _without_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


async def _text_without_nul(connection: asyncpg.Connection) -> None:
    """PostgreSQL's text cannot hold NUL, which users, models and SQLite can: a message,
    answer or tool result with one is stored with U+FFFD in its place, not refused."""
    await connection.set_type_codec(
        "text", schema="pg_catalog", encoder=_without_nul, decoder=str, format="text"
    )


async def open_postgres(address: StoreAddress, pool_size: int = POOL_SIZE) -> PostgresStore:
    try:
        pool = await asyncpg.create_pool(
            address.target, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings=_server_settings(address.target), reset=_keep_session,
            init=_text_without_nul,
        )  # fmt: skip
        async with pool.acquire() as connection:
            await migrate(connection)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
        reason = str(error).replace(address.target, address.shown) or type(error).__name__
        raise ConfigError(
            f"PARLEY_DB: cannot use PostgreSQL at {address.shown}: {reason}"
        ) from None
    return PostgresStore(pool, address.shown)


class PostgresStore(UsageQueries, AuditQueries, SummaryQueries, PostgresAccess):
    kind = "postgresql"

    def __init__(self, pool: asyncpg.Pool, shown: str) -> None:
        self.pool = pool
        self.description = f"PostgreSQL at {shown}"

    _message = staticmethod(_row_to_message)

    async def _transaction(self, work: Callable[[Connection], Awaitable[R]]) -> R:
        async with self.pool.acquire() as connection, connection.transaction():
            return await work(connection)

    async def close(self) -> None:
        await self.pool.close()

    async def writable(self) -> bool:
        async def probe(connection: Connection) -> None:
            await connection.execute(
                "INSERT INTO deliveries (key, seen_at) VALUES ('health', $1)"
                " ON CONFLICT (key) DO UPDATE SET seen_at = excluded.seen_at",
                time.time(),
            )

        try:
            await asyncio.wait_for(self._transaction(probe), HEALTH_TIMEOUT_SECONDS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    # -- deliveries and turns ----------------------------------------------------------

    async def claim_delivery(self, keys: tuple[str, ...]) -> bool:
        if not keys:
            return True
        # One statement, so atomic: the primary key lets one replica's insert win.
        inserted = await self.pool.fetchval(
            "WITH new AS (INSERT INTO deliveries (key, seen_at)"
            " SELECT DISTINCT unnest($1::text[]), $2::double precision ON CONFLICT DO NOTHING"
            " RETURNING 1)"
            " SELECT count(*) FROM new",
            list(keys), time.time(),
        )  # fmt: skip
        return bool(inserted == len(set(keys)))

    async def begin_turn(
        self,
        keys: tuple[str, ...],
        conversation: ConversationKey,
        owner: str,
        lease_seconds: float,
        payload: str,
    ) -> Turn | None:
        row = await self.pool.fetchrow(
            f"SELECT * FROM parley_begin_turn($1, $2, $3, $4, {DB_NOW} + $5, {DB_NOW}, $6)",
            list(keys), str(conversation), conversation.platform, owner, lease_seconds,
            payload,
        )  # fmt: skip
        if row is None:
            return None
        return Turn(int(row[0]), first=bool(row[1]), behind_stale=bool(row[2]))

    async def is_first_turn(self, conversation: ConversationKey, turn_id: int) -> bool:
        older = await self.pool.fetchval(
            f"SELECT 1 FROM turns WHERE conversation = $1 AND id < $2 AND lease_until > {DB_NOW}"
            " LIMIT 1",
            str(conversation), turn_id,
        )  # fmt: skip
        return older is None

    async def renew_turns(self, owner: str, lease_seconds: float) -> None:
        await self.pool.execute(
            # Past leases too: a turn still ours was taken by no one (taking it changes
            # its owner), and a slow database may have kept us from renewing in time.
            f"UPDATE turns SET lease_until = {DB_NOW} + $1 WHERE owner = $2",
            lease_seconds, owner,
        )  # fmt: skip

    async def end_turn(self, turn_id: int, owner: str) -> None:
        await self.pool.execute("DELETE FROM turns WHERE id = $1 AND owner = $2", turn_id, owner)

    async def release_turn(self, turn_id: int, owner: str) -> None:
        await self.pool.execute(
            "UPDATE turns SET lease_until = 0, owner = '' WHERE id = $1 AND owner = $2",
            turn_id, owner,
        )  # fmt: skip

    async def claim_stale_turns(
        self, owner: str, lease_seconds: float, platforms: tuple[str, ...], limit: int
    ) -> list[StaleTurn]:
        if not platforms:
            return []
        # SKIP LOCKED: two replicas looking at once take different turns, never one twice.
        rows = await self.pool.fetch(
            f"UPDATE turns SET owner = $1, lease_until = {DB_NOW} + $2 WHERE id IN (SELECT id"
            f" FROM turns WHERE lease_until < {DB_NOW} AND owner <> $1"
            " AND platform = ANY($3::text[]) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, platform, conversation, payload, created_at, admitted",
            owner, lease_seconds, list(platforms), limit,
        )  # fmt: skip
        turns = [StaleTurn(*row) for row in rows]
        return sorted(turns, key=lambda turn: turn.id)

    # -- history ------------------------------------------------------------------------

    @staticmethod
    async def _append(
        connection: Connection,
        key: str,
        role: str,
        content: str,
        tokens: int,
        user: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str = "",
        group_id: int = 0,
    ) -> int:
        new_id = await connection.fetchval(
            "INSERT INTO messages (conversation, role, content, tokens, group_id, author,"
            " tool_calls, tool_call_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " RETURNING id",
            key, role, content, tokens, group_id, user,
            json.dumps(tool_calls) if tool_calls else None, tool_call_id, time.time(),
        )  # fmt: skip
        return int(new_id)

    async def append(
        self, conversation: ConversationKey, role: str, content: str, tokens: int, *,
        user: str = "",
    ) -> int:  # fmt: skip
        async with self.pool.acquire() as connection:
            return await self._append(connection, str(conversation), role, content, tokens, user)

    async def admit_message(
        self, conversation: ConversationKey, user_key: str, limits: Any, now: float,
        text: str, tokens: int, turn_id: int | None = None, *, parts: str = "",
    ) -> Admission:  # fmt: skip
        return await self._admit(
            user_key, limits, now, str(conversation), text, tokens, turn_id, parts
        )

    async def finish_call(
        self,
        record: UsageRecord,
        conversation: ConversationKey,
        answer: Answer | None,
        turn_id: int | None,
        owner: str,
    ) -> None:
        await self._finish(record, str(conversation), answer, turn_id, owner)

    async def append_tool_round(
        self, conversation: ConversationKey, call: ToolCall, results: list[ToolResult]
    ) -> None:
        key = str(conversation)

        async def store_round(connection: Connection) -> None:
            content, tokens, tool_calls = call
            group = await self._append(
                connection, key, "assistant", content, tokens, tool_calls=tool_calls
            )
            for text, result_tokens, call_id in results:
                await self._append(
                    connection, key, "tool", text, result_tokens, tool_call_id=call_id,
                    group_id=group,
                )  # fmt: skip

        await self._transaction(store_round)

    async def recent(self, conversation: ConversationKey, max_messages: int) -> Window:
        # One more than asked for tells whether older messages were left out; the
        # conversation's reset mark and trim notice come along in the same round trip.
        rows = await self.pool.fetch(
            "WITH state AS (SELECT context_start, trim_noticed FROM conversations"
            " WHERE conversation = $1)"
            f" SELECT {_COLUMNS}, (SELECT trim_noticed FROM state) FROM messages"
            " WHERE conversation = $1"
            " AND id > coalesce((SELECT context_start FROM state), 0)"
            " ORDER BY id DESC LIMIT $2",
            str(conversation), max_messages + 1,
        )  # fmt: skip
        messages = [_row_to_message(row) for row in reversed(rows)]
        noticed = bool(rows and rows[0][9])
        dropped = len(messages) > max_messages
        return Window(messages[1:] if dropped else messages, dropped, noticed)

    async def has_history(self, conversation: ConversationKey) -> bool:
        row = await self.pool.fetchval(
            "SELECT 1 FROM messages WHERE conversation = $1 LIMIT 1", str(conversation)
        )
        return row is not None

    async def count_messages(self, conversation: ConversationKey) -> int:
        count = await self.pool.fetchval(
            "SELECT count(*) FROM messages WHERE conversation = $1", str(conversation)
        )
        return int(count)

    async def reset(self, conversation: ConversationKey) -> None:
        # One statement, so one transaction: the reset mark, and the summary cleared with
        # its marks moved to the reset (a later trim must not summarise, and so bring
        # back, what came before it).
        await self.pool.execute(
            "WITH mark AS (SELECT coalesce(max(id), 0) AS last FROM messages"
            " WHERE conversation = $1),"
            " cleared AS (INSERT INTO summaries (conversation, summary, covers_up_to,"
            " starts_after, updated_at) SELECT $1, '', last, last, $2 FROM mark"
            " ON CONFLICT (conversation) DO UPDATE SET summary = '',"
            " covers_up_to = excluded.covers_up_to, starts_after = excluded.starts_after,"
            " updated_at = excluded.updated_at),"
            # Answers cached within the conversation came from its history.
            " uncached AS (DELETE FROM response_cache WHERE channel = $1)"
            " INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " SELECT $1, last, false FROM mark"
            " ON CONFLICT (conversation) DO UPDATE SET"
            " context_start = excluded.context_start, trim_noticed = false",
            str(conversation), time.time(),
        )  # fmt: skip

    async def forget_channel(self, platform: str, workspace: str, channel: str) -> int:
        prefix = str(ConversationKey(platform, workspace, channel, ""))

        async def forget(connection: Connection) -> int:
            status = await connection.execute(
                "DELETE FROM messages WHERE conversation >= $1 AND conversation < $2",
                prefix, prefix + "\uffff",
            )  # fmt: skip
            await connection.execute(
                "DELETE FROM conversations WHERE conversation >= $1 AND conversation < $2",
                prefix, prefix + "\uffff",
            )  # fmt: skip
            await self._drop_summaries(connection, prefix, prefix + "\uffff")
            # Questions not answered yet go too: forgotten, they are never answered.
            await connection.execute(
                "DELETE FROM turns WHERE conversation >= $1 AND conversation < $2",
                prefix, prefix + "\uffff",
            )  # fmt: skip
            return _count(status)

        return await self._transaction(forget)

    async def claim_trim_notice(self, conversation: ConversationKey) -> bool:
        status = await self.pool.execute(
            "INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " VALUES ($1, 0, true) ON CONFLICT (conversation) DO UPDATE SET trim_noticed = true"
            " WHERE conversations.trim_noticed = false",
            str(conversation),
        )
        return _count(status) > 0

    async def search_channel(
        self, platform: str, workspace: str, channel: str, query: str, limit: int
    ) -> list[dict[str, Any]]:
        # No full-text index: it would cost every stored message an index update, and
        # a search is rare; the channel's rows are found by the conversation index and
        # matched as they are read. plainto_tsquery takes words, never query syntax.
        prefix = str(ConversationKey(platform, workspace, channel, ""))
        rows = await self.pool.fetch(
            "SELECT role, content, created_at FROM ("
            " SELECT role, content, created_at, ts_rank(to_tsvector('simple', content), q) AS r"
            " FROM messages, plainto_tsquery('simple', $3) AS q"
            " WHERE conversation >= $1 AND conversation < $2"
            " AND to_tsvector('simple', content) @@ q) AS hits ORDER BY r DESC LIMIT $4",
            prefix, prefix + "\uffff", query, limit,
        )  # fmt: skip
        return [{"role": row[0], "content": row[1], "created_at": row[2]} for row in rows]

    # -- channel settings ----------------------------------------------------------------

    async def channel_settings(self, platform: str, workspace: str, channel: str) -> dict[str, str]:
        row = await self.pool.fetchrow(
            "SELECT system_prompt, model FROM channel_settings WHERE platform = $1"
            " AND workspace = $2 AND channel = $3",
            platform, workspace, channel,
        )  # fmt: skip
        system_prompt, model = (row[0], row[1]) if row else ("", "")
        return {"system_prompt": system_prompt or "", "model": model or ""}

    async def set_channel_setting(
        self, platform: str, workspace: str, channel: str, name: str, value: str
    ) -> None:
        if name not in SETTING_COLUMNS:
            raise ValueError(f"unknown channel setting {name!r}")
        await self.pool.execute(
            f"INSERT INTO channel_settings (platform, workspace, channel, {name})"
            f" VALUES ($1, $2, $3, $4) ON CONFLICT (platform, workspace, channel)"
            f" DO UPDATE SET {name} = excluded.{name}",
            platform, workspace, channel, value or None,
        )  # fmt: skip

    async def prune(self, now: float) -> None:
        async def prune_both(connection: Connection) -> None:
            await connection.execute(
                "DELETE FROM deliveries WHERE seen_at < $1", now - DEDUPE_KEEP_SECONDS
            )
            await self._prune_admissions(connection, now)
            await connection.execute("DELETE FROM response_cache WHERE expires_at <= $1", now)

        await self._transaction(prune_both)
