"""SQLite through sqlite-utils: history, channel settings, dedupe, usage and limits.

This is the only module that speaks SQL. The engine uses the narrow interface below;
a PostgreSQL store with the same methods can replace it when a team outgrows one
machine.

Calls are synchronous and short (indexed reads of a few dozen rows, single-row
writes), so the engine calls them on the event loop: a thread hop would cost more
than the query.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.history import HistoryCache, StoredMessage, Window
from bot.messages import ConversationKey
from bot.store_schema import MIGRATIONS
from bot.store_usage import Admission, UsageRecord, UsageTables, UserLimits

__all__ = ["Admission", "Store", "StoredMessage", "UsageRecord", "UserLimits"]

# How long another process may hold the write lock before we give up.
BUSY_TIMEOUT_SECONDS = 10.0
DEDUPE_KEEP_SECONDS = 7 * 24 * 3600


class _Probe(Exception):
    """Raised to roll back a health probe's write."""


_COLUMNS = "id, role, content, tokens, group_id, user, tool_calls, tool_call_id"


def _row_to_message(row: tuple[Any, ...]) -> StoredMessage:
    tool_calls = json.loads(row[6]) if row[6] else None
    # group_id 0 means "a group of its own", which saves a second write per message.
    group_id = row[4] or row[0]
    return StoredMessage(row[0], row[1], row[2], row[3], group_id, row[5], tool_calls, row[7])


class Store(UsageTables):
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )
        self.db = Database(connection, execute_plugins=False)
        if self.path != ":memory:":
            self.db.enable_wal()
        # WAL with synchronous=NORMAL never corrupts; a power cut may lose the last
        # commit, which is an acceptable trade for several times faster writes.
        self.db.execute("PRAGMA synchronous=NORMAL")
        MIGRATIONS.apply(self.db)
        self.history_cache = HistoryCache()
        self._data_version = self._read_data_version()

    def close(self) -> None:
        self.db.close()

    def writable(self) -> bool:
        """True if this process can take the database's write lock right now."""
        try:
            with self.db.atomic():
                self.db.execute("INSERT INTO deliveries (key, seen_at) VALUES ('health', 0)")
                raise _Probe
        except _Probe:
            return True
        except sqlite3.Error:
            return False

    @contextmanager
    def atomic(self) -> Iterator[None]:
        try:
            with super().atomic():
                yield
        except BaseException:
            # Rolled back: cached windows may hold messages that were never stored.
            self.history_cache.clear()
            raise

    def _read_data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _drop_cache_if_others_wrote(self) -> None:
        # SQLite changes data_version when another connection (another process, the
        # admin CLI) commits; this connection's own writes keep the cache in step.
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self.history_cache.clear()

    # -- history ---------------------------------------------------------------

    def append(
        self,
        key: ConversationKey,
        role: str,
        content: str,
        tokens: int,
        *,
        user: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str = "",
        group_id: int | None = None,
    ) -> int:
        """Store one message; returns its id. A message is its own group unless given one."""
        stored_calls = json.dumps(tool_calls) if tool_calls else None
        cursor = self.db.execute(
            "INSERT INTO messages (conversation, role, content, tokens, group_id, user,"
            " tool_calls, tool_call_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(key),
                role,
                content,
                tokens,
                group_id or 0,
                user,
                stored_calls,
                tool_call_id,
                time.time(),
            ),
        )
        new_id = int(cursor.lastrowid or 0)
        self.history_cache.append(
            str(key),
            StoredMessage(
                new_id, role, content, tokens, group_id or new_id, user,
                # A copy, as a read from the database would give: never the caller's list.
                json.loads(stored_calls) if stored_calls else None, tool_call_id,
            ),
        )  # fmt: skip
        return new_id

    def recent(self, key: ConversationKey, max_messages: int) -> Window:
        """Up to `max_messages` newest messages since the last reset, oldest first."""
        # One more than asked for tells whether older messages were left out.
        count = max_messages + 1
        self._drop_cache_if_others_wrote()
        cached = self.history_cache.get(str(key), count)
        if cached is None:
            cached = self._read_window(key, count)
            self.history_cache.put(str(key), cached[0], count, cached[1])
        messages, noticed = cached
        dropped = len(messages) > max_messages
        return Window(messages[1:] if dropped else messages, dropped, noticed)

    def _read_window(self, key: ConversationKey, count: int) -> tuple[list[StoredMessage], bool]:
        start, noticed = self._conversation_state(key)
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE conversation = ? AND id > ?"
            " ORDER BY id DESC LIMIT ?",
            (str(key), start, count),
        ).fetchall()
        return [_row_to_message(row) for row in reversed(rows)], noticed

    def has_history(self, key: ConversationKey) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM messages WHERE conversation = ? LIMIT 1", (str(key),)
        ).fetchone()
        return row is not None

    def count_messages(self, key: ConversationKey) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM messages WHERE conversation = ?", (str(key),)
        ).fetchone()
        return int(row[0])

    def reset(self, key: ConversationKey) -> None:
        """Start afresh: stored messages stay but leave the context."""
        last = self.db.execute(
            "SELECT coalesce(max(id), 0) FROM messages WHERE conversation = ?", (str(key),)
        ).fetchone()[0]
        self.db.execute(
            "INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " VALUES (?, ?, 0) ON CONFLICT(conversation) DO UPDATE SET"
            " context_start = excluded.context_start, trim_noticed = 0",
            (str(key), last),
        )
        self.history_cache.drop(str(key))

    def forget_channel(self, platform: str, workspace: str, channel: str) -> int:
        """Delete every stored message of a channel, all its threads included."""
        prefix = str(ConversationKey(platform, workspace, channel, ""))
        with self.atomic():
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
            self.history_cache.clear()
            # SQLite reuses the ids of deleted newest rows: move the mark back so those
            # ids, when reused, are indexed like any new message.
            self.db.execute(
                "UPDATE fts_state SET last_indexed ="
                " min(last_indexed, (SELECT coalesce(max(id), 0) FROM messages))"
            )
        return int(cursor.rowcount)

    def _conversation_state(self, key: ConversationKey) -> tuple[int, bool]:
        """Where the context starts (after a reset), and whether trimming was told."""
        row = self.db.execute(
            "SELECT context_start, trim_noticed FROM conversations WHERE conversation = ?",
            (str(key),),
        ).fetchone()
        return (int(row[0]), bool(row[1])) if row else (0, False)

    def claim_trim_notice(self, key: ConversationKey) -> bool:
        """True the first time older messages are dropped since the last reset."""
        cursor = self.db.execute(
            "INSERT INTO conversations (conversation, context_start, trim_noticed)"
            " VALUES (?, 0, 1) ON CONFLICT(conversation) DO UPDATE SET trim_noticed = 1"
            " WHERE trim_noticed = 0",
            (str(key),),
        )
        self.history_cache.drop(str(key))
        return cursor.rowcount > 0

    # -- channel settings --------------------------------------------------------

    def channel_settings(self, platform: str, workspace: str, channel: str) -> dict[str, str]:
        """This channel's own system_prompt and model ("" where it has none)."""
        row = self.db.execute(
            "SELECT system_prompt, model FROM channel_settings WHERE platform = ?"
            " AND workspace = ? AND channel = ?",
            (platform, workspace, channel),
        ).fetchone()
        system_prompt, model = row if row else ("", "")
        return {"system_prompt": system_prompt or "", "model": model or ""}

    def channel_setting(self, platform: str, workspace: str, channel: str, name: str) -> str:
        return self.channel_settings(platform, workspace, channel)[name]

    def set_channel_setting(
        self, platform: str, workspace: str, channel: str, name: str, value: str
    ) -> None:
        assert name in ("system_prompt", "model")
        self.db.execute(
            f"INSERT INTO channel_settings (platform, workspace, channel, {name})"
            f" VALUES (?, ?, ?, ?) ON CONFLICT(platform, workspace, channel)"
            f" DO UPDATE SET {name} = excluded.{name}",
            (platform, workspace, channel, value or None),
        )

    # -- dedupe -------------------------------------------------------------------

    def claim_delivery(self, keys: tuple[str, ...]) -> bool:
        """Record delivery keys; False if any was seen before (answer exactly once)."""
        if not keys:
            return True
        now = time.time()
        fresh = True
        # The primary key decides: two processes racing on one key cannot both insert.
        with self.atomic():
            for key in keys:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO deliveries (key, seen_at) VALUES (?, ?)", (key, now)
                )
                fresh = fresh and cursor.rowcount == 1
        return fresh

    # -- search -------------------------------------------------------------------

    def search_channel(
        self, platform: str, workspace: str, channel: str, query: str, limit: int
    ) -> list[dict[str, Any]]:
        """Full-text search over one channel's messages (all its threads), best first."""
        self._index_new_messages()
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
        """Add messages stored since the last search to the full-text index, in bulk."""
        with self.atomic():
            # Writing first takes the write lock, so two processes never index twice.
            self.db.execute("UPDATE fts_state SET last_indexed = last_indexed")
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

    def prune_deliveries(self, now: float | None = None) -> int:
        cutoff = (now or time.time()) - DEDUPE_KEEP_SECONDS
        cursor = self.db.execute("DELETE FROM deliveries WHERE seen_at < ?", (cutoff,))
        return int(cursor.rowcount)
