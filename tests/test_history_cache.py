"""The in-memory history windows: always what a fresh read of the database gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bot.history import HistoryCache, StoredMessage
from bot.messages import ConversationKey
from bot.store import Store

KEY = ConversationKey("s", "w", "c")
OTHER = ConversationKey("s", "w", "other")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.db")


def texts(store: Store, key: ConversationKey = KEY, count: int = 10) -> list[str]:
    return [m.content for m in store.recent(key, count).messages]


def fresh_read(path: str, key: ConversationKey, count: int) -> tuple[list[str], bool, bool]:
    """The window as a new connection reads it, straight from the database."""
    other = Store(path)
    try:
        window = other.recent(key, count)
        return [m.content for m in window.messages], window.dropped_older, window.trim_noticed
    finally:
        other.close()


def message(id_: int, content: str) -> StoredMessage:
    return StoredMessage(id_, "user", content, 1, id_)


def test_a_window_grows_with_appends_and_keeps_only_the_newest() -> None:
    cache = HistoryCache()
    cache.put("c", [message(1, "a"), message(2, "b")], capacity=3, noticed=False)
    cache.append("c", message(3, "c"))
    cache.append("c", message(4, "d"))
    assert cache.get("c", 3) == ([message(2, "b"), message(3, "c"), message(4, "d")], False)
    assert cache.get("c", 2) == ([message(3, "c"), message(4, "d")], False)
    assert cache.get("c", 4) is None  # held too short to answer
    cache.append("not held", message(5, "e"))
    assert cache.get("not held", 1) is None


def test_the_least_recently_used_windows_go_beyond_the_size_limit() -> None:
    cache = HistoryCache(max_chars=10)
    cache.put("old", [message(1, "x" * 4)], capacity=5, noticed=False)
    cache.put("new", [message(2, "y" * 4)], capacity=5, noticed=False)
    cache.get("old", 1)  # used again: now "new" is the least recent
    cache.append("old", message(3, "z" * 4))
    assert cache.get("new", 1) is None
    assert cache.get("old", 2) is not None
    assert len(cache) == 1


def test_a_write_by_another_connection_is_seen(store: Store) -> None:
    store.append(KEY, "user", "mine", 1)
    assert texts(store) == ["mine"]
    other = Store(store.path)
    other.append(KEY, "assistant", "from another process", 1)
    other.close()
    assert texts(store) == ["mine", "from another process"]


def test_a_forget_by_another_connection_is_never_served_from_memory(store: Store) -> None:
    store.append(KEY, "user", "secret", 1)
    assert texts(store) == ["secret"]
    other = Store(store.path)
    other.forget_channel("s", "w", "c")
    other.close()
    assert texts(store) == []


def test_a_rolled_back_message_is_not_served(store: Store) -> None:
    store.append(KEY, "user", "kept", 1)
    assert texts(store) == ["kept"]
    with pytest.raises(RuntimeError), store.atomic():
        store.append(KEY, "user", "rolled back", 1)
        raise RuntimeError
    assert texts(store) == ["kept"]


def test_reset_and_forget_in_this_process(store: Store) -> None:
    store.append(KEY, "user", "before", 1)
    store.append(OTHER, "user", "elsewhere", 1)
    assert texts(store) == ["before"]
    store.reset(KEY)
    assert texts(store) == []
    store.append(KEY, "user", "after", 1)
    assert texts(store) == ["after"]
    store.forget_channel("s", "w", "c")
    assert texts(store) == []
    assert texts(store, OTHER) == ["elsewhere"]


def test_a_tool_call_read_from_memory_is_a_copy(store: Store) -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    store.recent(KEY, 10)  # hold the window, so the append goes to memory too
    store.append(KEY, "assistant", "", 1, tool_calls=calls)
    calls[0]["id"] = "changed by the caller"
    assert store.recent(KEY, 10).messages[0].tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


@pytest.mark.parametrize("seed", range(5))
def test_random_use_matches_a_fresh_read(store: Store, seed: int) -> None:
    # Appends, resets, trim notices, forgets and reads of several sizes in any order:
    # what memory serves must equal what another connection reads from the file.
    rng = random.Random(seed)
    keys = [KEY, ConversationKey("s", "w", "c", "thread"), OTHER]
    for step in range(300):
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.6:
            store.append(key, rng.choice(["user", "assistant"]), f"m{step}", 1)
        elif action < 0.65:
            store.reset(key)
        elif action < 0.7:
            store.claim_trim_notice(key)
        elif action < 0.72:
            store.forget_channel("s", "w", rng.choice(["c", "other"]))
        count = rng.choice([3, 5, 8])
        window = store.recent(key, count)
        served = ([m.content for m in window.messages], window.dropped_older, window.trim_noticed)
        assert served == fresh_read(store.path, key, count), f"step {step}"
