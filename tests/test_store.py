"""The store's own guarantees: the search index, channel isolation, migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.messages import ConversationKey
from bot.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.db")


def contents(rows: list[dict[str, object]]) -> list[object]:
    return [row["content"] for row in rows]


def test_search_sees_messages_stored_after_an_earlier_search(store: Store) -> None:
    key = ConversationKey("s", "w", "c")
    store.append(key, "user", "the first kiwi", 3)
    assert contents(store.search_channel("s", "w", "c", "kiwi", 5)) == ["the first kiwi"]
    store.append(key, "user", "a second kiwi", 3)
    assert sorted(contents(store.search_channel("s", "w", "c", "kiwi", 5))) == [
        "a second kiwi", "the first kiwi",
    ]  # fmt: skip


def test_forget_removes_messages_from_the_index_too(store: Store) -> None:
    store.append(ConversationKey("s", "w", "c"), "user", "secret mango", 3)
    store.append(ConversationKey("s", "w", "c", "t1"), "user", "unsearched mango", 3)
    store.append(ConversationKey("s", "w", "other"), "user", "other mango", 3)
    assert store.forget_channel("s", "w", "c") == 2
    assert store.search_channel("s", "w", "c", "mango", 5) == []
    assert contents(store.search_channel("s", "w", "other", "mango", 5)) == ["other mango"]
    store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


@pytest.mark.parametrize("query", ['"unbalanced', "NOT", "a OR b", "col:value", "*"])
def test_search_queries_are_quoted_not_parsed(store: Store, query: str) -> None:
    store.append(ConversationKey("s", "w", "c"), "user", "plain words", 2)
    assert store.search_channel("s", "w", "c", query, 5) == []


def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    Store(tmp_path / "twice.db").close()
    again = Store(tmp_path / "twice.db")
    names = [row[0] for row in again.db.execute("SELECT name FROM _sqlite_migrations")]
    assert len(names) == len(set(names)) >= 4
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_reused_after_forget_are_searchable_and_forgettable(store: Store) -> None:
    store.append(ConversationKey("s", "w", "keep"), "user", "old papaya", 3)
    store.append(ConversationKey("s", "w", "gone"), "user", "newest papaya", 3)
    store.search_channel("s", "w", "gone", "papaya", 5)  # index everything so far
    store.forget_channel("s", "w", "gone")  # deletes the newest row: its id is free again
    store.append(ConversationKey("s", "w", "gone"), "user", "fresh papaya", 3)
    assert contents(store.search_channel("s", "w", "gone", "papaya", 5)) == ["fresh papaya"]
    assert store.forget_channel("s", "w", "gone") == 1
    store.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    assert contents(store.search_channel("s", "w", "keep", "papaya", 5)) == ["old papaya"]
