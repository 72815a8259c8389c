"""The embedded store: SQLite through sqlite-utils, one file, one process or a few.

Each store call is one short transaction run on the event loop: indexed reads of a
few dozen rows and single-row writes cost less than a hop to a thread would. What
must not run on the loop is a wait for the write lock another process holds (the
admin CLI, a backup, a second Parley): writes take the lock with BEGIN IMMEDIATE
and a busy timeout of a few milliseconds, and when it is taken they yield to the
loop and try again, for up to BUSY_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlite_utils import Database

from bot.history import Held, HistoryCache, StoredMessage, Window
from bot.messages import ConversationKey
from bot.store.access_tables import SqliteAccess
from bot.store.base import SETTING_COLUMNS, ToolCall, ToolResult
from bot.store.records import (
    DEDUPE_KEEP_SECONDS,
    Admission,
    Answer,
    StaleTurn,
    Turn,
    UsageRecord,
)
from bot.store.sqlite_audit import AuditTables
from bot.store.sqlite_schema import MIGRATIONS
from bot.store.sqlite_summaries import SummaryTables
from bot.store.sqlite_usage import UsageTables

# How long a write keeps trying for the lock another process holds, in all.
BUSY_TIMEOUT_SECONDS = 10.0
# How long SQLite itself waits for the lock before yielding to the loop (blocking).
LOCK_SPIN_MS = 5
_COLUMNS = "id, role, content, tokens, group_id, user, tool_calls, tool_call_id, parts"

P = ParamSpec("P")
R = TypeVar("R")


class _Probe(Exception):
    """Raised to roll back a health probe's write."""


def _row_to_message(row: tuple[Any, ...]) -> StoredMessage:
    tool_calls = json.loads(row[6]) if row[6] else None
    # group_id 0 means "a group of its own", which saves a second write per message.
    group_id = row[4] or row[0]
    return StoredMessage(
        row[0], row[1], row[2], row[3], group_id, row[5], tool_calls, row[7], row[8] or ""
    )


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def open_database(path: str) -> Database:
    """Open (creating if need be) and migrate; two processes starting at once migrate
    one after the other, and the second finds nothing left to do."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
    )
    db = Database(connection, execute_plugins=False)
    if path != ":memory:":
        db.enable_wal()
    # WAL with synchronous=NORMAL never corrupts; a power cut may lose the last
    # commit, which is an acceptable trade for several times faster writes.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        MIGRATIONS.apply(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute(f"PRAGMA busy_timeout={LOCK_SPIN_MS}")
    return db


class SqliteStore(UsageTables, AuditTables, SummaryTables, SqliteAccess):
    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.description = f"SQLite at {self.path}"
        self.db = open_database(self.path)
        self.history_cache = HistoryCache()
        self._data_version = self._read_data_version()

    # -- running calls -------------------------------------------------------------------

    async def _write(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run work in one write transaction, waiting for the lock off the loop."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        delay = 0.002
        while True:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            result = work(*args, **kwargs)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            # Rolled back: cached windows may hold messages that were never stored.
            self.history_cache.clear()
            raise
        return result

    async def close(self) -> None:
        self.db.close()

    async def writable(self) -> bool:
        def probe() -> None:
            # A real page write that is then rolled back would never touch the disk:
            # write a row for real, so a full disk or a read-only file shows.
            self.db.execute(
                "INSERT INTO deliveries (key, seen_at) VALUES ('health', ?)"
                " ON CONFLICT(key) DO UPDATE SET seen_at = excluded.seen_at",
                (time.time(),),
            )

        try:
            await self._write(probe)
        except sqlite3.Error:
            return False
        return True

    def _read_data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _drop_cache_if_others_wrote(self) -> None:
        # SQLite changes data_version when another connection (another process, the
        # admin CLI) commits; this connection's own writes keep the cache in step.
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self.history_cache.clear()

    # -- deliveries and turns ----------------------------------------------------------------

    def _claim(self, keys: tuple[str, ...], now: float) -> bool:
        fresh = True
        # The primary key decides: two processes racing on one key cannot both insert.
        for key in keys:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO deliveries (key, seen_at) VALUES (?, ?)", (key, now)
            )
            fresh = fresh and cursor.rowcount == 1
        return fresh

    async def claim_delivery(self, keys: tuple[str, ...]) -> bool:
        if not keys:
            return True
        return await self._write(self._claim, keys, time.time())

    def _begin_turn(
        self, keys: tuple[str, ...], key: ConversationKey, owner: str, lease: float,
        payload: str,
    ) -> Turn | None:  # fmt: skip
        now = time.time()
        if keys and not self._claim(keys, now):
            return None
        cursor = self.db.execute(
            "INSERT INTO turns (conversation, platform, owner, lease_until, created_at,"
            " payload) VALUES (?, ?, ?, ?, ?, ?)",
            (str(key), key.platform, owner, now + lease, now, payload),
        )
        turn_id = int(cursor.lastrowid or 0)
        live, stale = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM turns WHERE conversation = ?1 AND id < ?2"
            " AND lease_until > ?3), EXISTS (SELECT 1 FROM turns WHERE conversation = ?1"
            " AND id < ?2 AND lease_until <= ?3)",
            (str(key), turn_id, now),
        ).fetchone()
        return Turn(turn_id, first=not live, behind_stale=bool(stale))

    async def begin_turn(
        self,
        keys: tuple[str, ...],
        conversation: ConversationKey,
        owner: str,
        lease_seconds: float,
        payload: str,
    ) -> Turn | None:
        return await self._write(
            self._begin_turn, keys, conversation, owner, lease_seconds, payload
        )

    def _first(self, key: str, turn_id: int, now: float) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM turns WHERE conversation = ? AND id < ? AND lease_until > ? LIMIT 1",
            (key, turn_id, now),
        ).fetchone()
        return row is None

    async def is_first_turn(self, conversation: ConversationKey, turn_id: int) -> bool:
        return self._first(str(conversation), turn_id, time.time())

    async def renew_turns(self, owner: str, lease_seconds: float) -> None:
        now = time.time()
        await self._write(
            self.db.execute,
            # Past leases too: a turn still ours was taken by no one (taking it changes
            # its owner), and a write lock held elsewhere may have kept us from renewing.
            "UPDATE turns SET lease_until = ? WHERE owner = ?",
            (now + lease_seconds, owner),
        )

    async def end_turn(self, turn_id: int, owner: str) -> None:
        await self._write(
            self.db.execute, "DELETE FROM turns WHERE id = ? AND owner = ?", (turn_id, owner)
        )

    async def release_turn(self, turn_id: int, owner: str) -> None:
        await self._write(
            self.db.execute,
            "UPDATE turns SET lease_until = 0, owner = '' WHERE id = ? AND owner = ?",
            (turn_id, owner),
        )

    def _claim_stale(
        self, owner: str, lease: float, platforms: tuple[str, ...], limit: int
    ) -> list[StaleTurn]:
        now = time.time()
        marks = ", ".join("?" * len(platforms))
        rows = self.db.execute(
            "SELECT id, platform, conversation, payload, created_at, admitted FROM turns"
            f" WHERE lease_until < ? AND owner <> ? AND platform IN ({marks}) ORDER BY id LIMIT ?",
            (now, owner, *platforms, limit),
        ).fetchall()
        for row in rows:
            self.db.execute(
                "UPDATE turns SET owner = ?, lease_until = ? WHERE id = ?",
                (owner, now + lease, row[0]),
            )
        return [StaleTurn(row[0], row[1], row[2], row[3], row[4], bool(row[5])) for row in rows]

    async def claim_stale_turns(
        self, owner: str, lease_seconds: float, platforms: tuple[str, ...], limit: int
    ) -> list[StaleTurn]:
        if not platforms:
            return []
        # Inside BEGIN IMMEDIATE: no other process takes the same turns meanwhile.
        return await self._write(self._claim_stale, owner, lease_seconds, platforms, limit)

    # -- history -------------------------------------------------------------------------

    def _append(
        self,
        key: str,
        role: str,
        content: str,
        tokens: int,
        user: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str = "",
        group_id: int | None = None,
        parts: str = "",
    ) -> int:
        """Store one message; returns its id. A message is its own group unless given one."""
        stored_calls = json.dumps(tool_calls) if tool_calls else None
        cursor = self.db.execute(
            "INSERT INTO messages (conversation, role, content, tokens, group_id, user,"
            " tool_calls, tool_call_id, created_at, parts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, role, content, tokens, group_id or 0, user, stored_calls, tool_call_id,
             time.time(), parts or None),
        )  # fmt: skip
        new_id = int(cursor.lastrowid or 0)
        self.history_cache.append(
            key,
            StoredMessage(
                new_id, role, content, tokens, group_id or new_id, user,
                # A copy, as a read from the database would give: never the caller's list.
                json.loads(stored_calls) if stored_calls else None, tool_call_id, parts,
            ),
        )  # fmt: skip
        return new_id

    async def append(
        self, conversation: ConversationKey, role: str, content: str, tokens: int, *,
        user: str = "",
    ) -> int:  # fmt: skip
        return await self._write(self._append, str(conversation), role, content, tokens, user)

    def _admit_message(
        self, key: str, user_key: str, limits: Any, now: float, text: str, tokens: int,
        turn_id: int | None, parts: str,
    ) -> Admission:  # fmt: skip
        verdict = self._admit(user_key, limits, now) if limits is not None else Admission()
        if not verdict.refused:
            self._append(key, "user", text, tokens, user_key, parts=parts)
            if turn_id is not None:
                self.db.execute("UPDATE turns SET admitted = 1 WHERE id = ?", (turn_id,))
        return verdict

    async def admit_message(
        self, conversation: ConversationKey, user_key: str, limits: Any, now: float,
        text: str, tokens: int, turn_id: int | None = None, *, parts: str = "",
    ) -> Admission:  # fmt: skip
        return await self._write(
            self._admit_message, str(conversation), user_key, limits, now, text, tokens,
            turn_id, parts,
        )  # fmt: skip

    def _finish_call(
        self, record: UsageRecord, key: str, answer: Answer | None, turn_id: int | None,
        owner: str,
    ) -> None:  # fmt: skip
        self._record_usage(record)
        if turn_id is not None:
            ended = self.db.execute(
                "DELETE FROM turns WHERE id = ? AND owner = ?", (turn_id, owner)
            ).rowcount
            answer = answer if ended else None  # taken over: the other process answers
        if answer is not None:
            self._append(key, "assistant", answer.text, answer.tokens)

    async def finish_call(
        self,
        record: UsageRecord,
        conversation: ConversationKey,
        answer: Answer | None,
        turn_id: int | None,
        owner: str,
    ) -> None:
        await self._write(self._finish_call, record, str(conversation), answer, turn_id, owner)

    def _append_tool_round(self, key: str, call: ToolCall, results: list[ToolResult]) -> None:
        content, tokens, tool_calls = call
        group = self._append(key, "assistant", content, tokens, tool_calls=tool_calls)
        for text, result_tokens, call_id in results:
            self._append(key, "tool", text, result_tokens, tool_call_id=call_id, group_id=group)

    async def append_tool_round(
        self, conversation: ConversationKey, call: ToolCall, results: list[ToolResult]
    ) -> None:
        await self._write(self._append_tool_round, str(conversation), call, results)

    async def recent(self, conversation: ConversationKey, max_messages: int) -> Window:
        key = str(conversation)
        # One more than asked for tells whether older messages were left out.
        count = max_messages + 1
        self._drop_cache_if_others_wrote()
        held = self.history_cache.get(key, count)
        if held is None:
            messages, noticed = self._read_window(key, count)
            self.history_cache.put(key, messages, count, noticed)
            # Not held if too large to hold: then without chat forms.
            held = self.history_cache.get(key, count) or Held(messages, noticed, None)
        messages, noticed, chats = held
        if len(messages) > max_messages:
            return Window(messages[1:], True, noticed, None if chats is None else chats[1:])
        return Window(messages, False, noticed, chats)

    def _read_window(self, key: str, count: int) -> tuple[list[StoredMessage], bool]:
        row = self.db.execute(
            "SELECT context_start, trim_noticed FROM conversations WHERE conversation = ?",
            (key,),
        ).fetchone()
        start, noticed = (int(row[0]), bool(row[1])) if row else (0, False)
        messages = self._messages(
            "WHERE conversation = ? AND id > ? ORDER BY id DESC LIMIT ?", (key, start, count)
        )
        return messages, noticed

    def _messages(self, sql: str, parameters: tuple[Any, ...]) -> list[StoredMessage]:
        """Messages selected newest first by `sql` (a WHERE clause on), oldest first."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM messages {sql}", parameters).fetchall()
        return [_row_to_message(row) for row in reversed(rows)]

    async def has_history(self, conversation: ConversationKey) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM messages WHERE conversation = ? LIMIT 1", (str(conversation),)
        ).fetchone()
        return row is not None

    async def count_messages(self, conversation: ConversationKey) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM messages WHERE conversation = ?", (str(conversation),)
        ).fetchone()
        return int(row[0])

    def _reset(self, key: str) -> None:
        last = self.db.execute(
            "SELECT coalesce(max(id), 0) FROM messages WHERE conversation = ?", (key,)
        ).fetchone()[0]
        self.db.execute(
            "INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " VALUES (?, ?, 0) ON CONFLICT(conversation) DO UPDATE SET"
            " context_start = excluded.context_start, trim_noticed = 0",
            (key, last),
        )
        # The summary is cleared and its marks moved to the reset: a later trim must not
        # summarise (and so bring back) what came before it.
        self.db.execute(
            "INSERT INTO summaries (conversation, summary, covers_up_to, starts_after,"
            " updated_at) VALUES (?, '', ?, ?, ?) ON CONFLICT(conversation) DO UPDATE SET"
            " summary = '', covers_up_to = excluded.covers_up_to,"
            " starts_after = excluded.starts_after, updated_at = excluded.updated_at",
            (key, last, last, time.time()),
        )
        # Answers cached within the conversation came from its history (bot/response_cache.py).
        self.db.execute("DELETE FROM response_cache WHERE channel = ?", (key,))
        self.history_cache.drop(key)

    async def reset(self, conversation: ConversationKey) -> None:
        await self._write(self._reset, str(conversation))

    def _forget_channel(self, prefix: str) -> int:
        # The delete trigger removes rows from the index: they must be in it first.
        self._index_new_messages()
        cursor = self.db.execute(
            "DELETE FROM messages WHERE conversation >= ? AND conversation < ?",
            (prefix, prefix + "\uffff"),
        )
        self.db.execute(
            "DELETE FROM conversations WHERE conversation >= ? AND conversation < ?",
            (prefix, prefix + "\uffff"),
        )
        self._drop_summaries(prefix, prefix + "\uffff")
        # Questions of the channel not answered yet go too: forgotten, they are never
        # answered (nor their text kept) by a process taking over their turns.
        self.db.execute(
            "DELETE FROM turns WHERE conversation >= ? AND conversation < ?",
            (prefix, prefix + "\uffff"),
        )
        self.history_cache.clear()
        # SQLite reuses the ids of deleted newest rows: move the mark back so those
        # ids, when reused, are indexed like any new message.
        self.db.execute(
            "UPDATE fts_state SET last_indexed ="
            " min(last_indexed, (SELECT coalesce(max(id), 0) FROM messages))"
        )
        return int(cursor.rowcount)

    async def forget_channel(self, platform: str, workspace: str, channel: str) -> int:
        prefix = str(ConversationKey(platform, workspace, channel, ""))
        return await self._write(self._forget_channel, prefix)

    def _claim_trim_notice(self, key: str) -> bool:
        cursor = self.db.execute(
            "INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " VALUES (?, 0, 1) ON CONFLICT(conversation) DO UPDATE SET trim_noticed = 1"
            " WHERE trim_noticed = 0",
            (key,),
        )
        self.history_cache.drop(key)
        return cursor.rowcount > 0

    async def claim_trim_notice(self, conversation: ConversationKey) -> bool:
        return await self._write(self._claim_trim_notice, str(conversation))

    # -- search ----------------------------------------------------------------------------

    async def search_channel(
        self, platform: str, workspace: str, channel: str, query: str, limit: int
    ) -> list[dict[str, Any]]:
        await self._write(self._index_new_messages)
        prefix = str(ConversationKey(platform, workspace, channel, ""))
        cursor = self.db.execute(
            "SELECT m.role, m.content, m.created_at FROM messages_fts"
            " JOIN messages m ON m.id = messages_fts.rowid"
            " WHERE messages_fts MATCH ? AND m.conversation >= ? AND m.conversation < ?"
            " ORDER BY rank LIMIT ?",
            (self.db.quote_fts(query), prefix, prefix + "\uffff", limit),
        )
        return [
            {"role": role, "content": content, "created_at": created_at}
            for role, content, created_at in cursor.fetchall()
        ]

    def _index_new_messages(self) -> None:
        """Add messages stored since the last search to the full-text index, in bulk
        (inside a write transaction, so two processes never index twice)."""
        last = self.db.execute("SELECT last_indexed FROM fts_state").fetchone()[0]
        self.db.execute(
            "INSERT INTO messages_fts (rowid, content)"
            " SELECT id, content FROM messages WHERE id > ?",
            (last,),
        )
        self.db.execute(
            "UPDATE fts_state SET last_indexed = (SELECT coalesce(max(id), ?) FROM messages)",
            (last,),
        )

    # -- channel settings ----------------------------------------------------------------

    async def channel_settings(self, platform: str, workspace: str, channel: str) -> dict[str, str]:
        row = self.db.execute(
            "SELECT system_prompt, model FROM channel_settings WHERE platform = ?"
            " AND workspace = ? AND channel = ?",
            (platform, workspace, channel),
        ).fetchone()
        system_prompt, model = row if row else ("", "")
        return {"system_prompt": system_prompt or "", "model": model or ""}

    async def set_channel_setting(
        self, platform: str, workspace: str, channel: str, name: str, value: str
    ) -> None:
        if name not in SETTING_COLUMNS:
            raise ValueError(f"unknown channel setting {name!r}")
        await self._write(
            self.db.execute,
            f"INSERT INTO channel_settings (platform, workspace, channel, {name})"
            f" VALUES (?, ?, ?, ?) ON CONFLICT(platform, workspace, channel)"
            f" DO UPDATE SET {name} = excluded.{name}",
            (platform, workspace, channel, value or None),
        )

    async def prune(self, now: float) -> None:
        def prune_both() -> None:
            cutoff = now - DEDUPE_KEEP_SECONDS
            self.db.execute("DELETE FROM deliveries WHERE seen_at < ?", (cutoff,))
            self._prune_admissions(now)
            self._prune_answers(now)

        await self._write(prune_both)
