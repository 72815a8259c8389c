"""History windows: always what a fresh read of the database gives, whichever store,
whatever another process or replica wrote in between."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.history import HELD_MESSAGE_OVERHEAD, HistoryCache, StoredMessage
from bot.messages import ConversationKey
from bot.store import Store, open_store
from bot.store.sqlite import SqliteStore

KEY = ConversationKey("s", "w", "c")
OTHER = ConversationKey("s", "w", "other")


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: another process, another replica."""
    second = await open_store(store_url)
    yield second
    await second.close()


async def texts(store: Store, key: ConversationKey = KEY, count: int = 10) -> list[str]:
    return [m.content for m in (await store.recent(key, count)).messages]


def message(id_: int, content: str) -> StoredMessage:
    return StoredMessage(id_, "user", content, 1, id_)


def test_a_window_grows_with_appends_and_keeps_only_the_newest() -> None:
    cache = HistoryCache()
    cache.put("c", [message(1, "a"), message(2, "b")], capacity=3, noticed=False)
    cache.append("c", message(3, "c"))
    cache.append("c", message(4, "d"))
    held = cache.get("c", 3)
    assert held is not None
    assert held.messages == [message(2, "b"), message(3, "c"), message(4, "d")]
    assert held.chats == [m.as_chat() for m in held.messages]
    assert not held.trim_noticed
    assert cache.get("c", 2) == ([message(3, "c"), message(4, "d")], False, held.chats[1:])
    assert cache.get("c", 4) is None  # held too short to answer
    cache.append("not held", message(5, "e"))
    assert cache.get("not held", 1) is None


def test_the_least_recently_used_windows_go_beyond_the_size_limit() -> None:
    cache = HistoryCache(max_chars=10 + 2 * HELD_MESSAGE_OVERHEAD)  # two of the three
    cache.put("old", [message(1, "x" * 4)], capacity=5, noticed=False)
    cache.put("new", [message(2, "y" * 4)], capacity=5, noticed=False)
    cache.get("old", 1)  # used again: now "new" is the least recent
    cache.append("old", message(3, "z" * 4))
    assert cache.get("new", 1) is None
    assert cache.get("old", 2) is not None
    assert len(cache) == 1


def test_a_window_with_images_holds_no_chat_forms_until_they_slide_out() -> None:
    # A message's images would be held twice (its parts, and its chat form's copy).
    cache = HistoryCache()
    image = StoredMessage(1, "user", "see", 1, 1, parts='[{"type": "text", "text": "see"}]')
    cache.put("c", [image, message(2, "b")], capacity=2, noticed=False)
    held = cache.get("c", 2)
    assert held is not None and held.chats is None
    cache.append("c", message(3, "c"))  # the image slides out of the window
    held = cache.get("c", 2)
    assert held is not None and held.chats == [m.as_chat() for m in held.messages]


_STEPS = st.lists(
    st.tuples(st.sampled_from(["put", "append", "drop"]), st.sampled_from("ab"),
              st.booleans(), st.integers(0, 4)),
    max_size=30,
)  # fmt: skip


@given(_STEPS)
def test_held_chat_forms_are_always_those_of_the_messages_given(
    steps: list[tuple[str, str, bool, int]],
) -> None:
    # What a prompt takes as it is: whatever the windows went through, the chat forms
    # given are exactly the messages' own, or none (a window holding images).
    cache = HistoryCache(max_chars=7 * (HELD_MESSAGE_OVERHEAD + 40))  # evicts now and then
    ids = iter(range(1, 1000))

    def made(images: bool) -> StoredMessage:
        id_ = next(ids)
        parts = '[{"type": "text", "text": "x"}]' if images else ""
        return StoredMessage(id_, "user", f"m{id_}", 1, id_, parts=parts)

    for action, conversation, images, count in steps:
        if action == "put":
            cache.put(conversation, [made(images) for _ in range(count)], 4, noticed=False)
        elif action == "append":
            cache.append(conversation, made(images))
        else:
            cache.drop(conversation)
        for name in "ab":
            for size in range(1, 5):
                held = cache.get(name, size)
                if held is None:
                    continue
                if held.chats is not None:
                    assert held.chats == [m.as_chat() for m in held.messages]
                else:  # a window holding images (perhaps older than these `size`)
                    whole = cache.get(name, 4)
                    assert whole is not None and any(m.parts for m in whole.messages)


def test_a_window_larger_than_the_limit_is_not_held_and_drops_no_other() -> None:
    cache = HistoryCache(max_chars=10 + HELD_MESSAGE_OVERHEAD)
    cache.put("small", [message(1, "x")], capacity=5, noticed=False)
    cache.put("huge", [message(2, "y" * 20)], capacity=5, noticed=False)
    assert cache.get("huge", 1) is None
    assert cache.get("small", 1) is not None


async def test_a_write_by_another_replica_is_seen(store: Store, other: Store) -> None:
    await store.append(KEY, "user", "mine", 1)
    assert await texts(store) == ["mine"]
    await other.append(KEY, "assistant", "from another process", 1)
    assert await texts(store) == ["mine", "from another process"]


async def test_a_forget_by_another_replica_is_never_served(store: Store, other: Store) -> None:
    await store.append(KEY, "user", "secret", 1)
    assert await texts(store) == ["secret"]
    await other.forget_channel("s", "w", "c")
    assert await texts(store) == []


async def test_a_reset_by_another_replica_applies_at_once(store: Store, other: Store) -> None:
    await store.append(KEY, "user", "before", 1)
    assert await texts(store) == ["before"]
    await other.reset(KEY)
    assert await texts(store) == []


async def test_a_rolled_back_message_is_not_served(tmp_path: object) -> None:
    store = SqliteStore(f"{tmp_path}/rollback.db")
    await store.append(KEY, "user", "kept", 1)
    assert await texts(store) == ["kept"]

    def append_then_fail() -> None:
        store._append(str(KEY), "user", "rolled back", 1)
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await store._write(append_then_fail)
    assert await texts(store) == ["kept"]
    await store.close()


async def test_reset_and_forget_in_this_process(store: Store) -> None:
    await store.append(KEY, "user", "before", 1)
    await store.append(OTHER, "user", "elsewhere", 1)
    assert await texts(store) == ["before"]
    await store.reset(KEY)
    assert await texts(store) == []
    await store.append(KEY, "user", "after", 1)
    assert await texts(store) == ["after"]
    await store.forget_channel("s", "w", "c")
    assert await texts(store) == []
    assert await texts(store, OTHER) == ["elsewhere"]


async def test_a_tool_call_read_back_is_a_copy(store: Store) -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    await store.recent(KEY, 10)  # hold the window, so the append goes to memory too
    await store.append_tool_round(KEY, ("", 1, calls), [("result", 1, "c1")])
    calls[0]["id"] = "changed by the caller"
    stored = (await store.recent(KEY, 10)).messages
    assert stored[0].tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    assert [m.group_id for m in stored] == [stored[0].id, stored[0].id]


@pytest.mark.parametrize("seed", range(3))
async def test_random_use_matches_a_fresh_read(store: Store, other: Store, seed: int) -> None:
    # Appends, resets, trim notices, forgets and reads of several sizes in any order,
    # by either of two stores: what one serves must equal what the other reads.
    rng = random.Random(seed)
    keys = [KEY, ConversationKey("s", "w", "c", "thread"), OTHER]
    for step in range(150):
        key = rng.choice(keys)
        writer = rng.choice([store, store, other])
        action = rng.random()
        if action < 0.6:
            await writer.append(key, rng.choice(["user", "assistant"]), f"m{step}", 1)
        elif action < 0.65:
            await writer.reset(key)
        elif action < 0.7:
            await writer.claim_trim_notice(key)
        elif action < 0.72:
            await writer.forget_channel("s", "w", rng.choice(["c", "other"]))
        count = rng.choice([3, 5, 8])
        served = await store.recent(key, count)
        if isinstance(other, SqliteStore):
            other.history_cache.clear()  # a read from the file, not from memory
        fresh = await other.recent(key, count)
        assert served == fresh, f"step {step}"


async def test_settings_and_limits_set_on_one_replica_apply_on_the_other(
    store: Store, other: Store
) -> None:
    from bot.store import UserLimits

    assert await other.channel_settings("s", "w", "c") == {"system_prompt": "", "model": ""}
    await store.set_channel_setting("s", "w", "c", "system_prompt", "Be brief.")
    await store.set_user_limit("s:u", "blocked", 1)
    assert (await other.channel_settings("s", "w", "c"))["system_prompt"] == "Be brief."
    assert (await other.admit("s:u", UserLimits(), 1000.0)).refused == "blocked"


async def test_the_chat_forms_held_are_those_of_the_messages(store: Store) -> None:
    """The prompt takes a held window's chat forms as they are: they must be each
    message's own, through appends, tool rounds and the window's sliding."""
    await store.append(KEY, "user", "look", 1)
    call = [{"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]
    await store.append_tool_round(KEY, ("", 1, call), [("result", 1, "c1")])
    for index in range(6):
        await store.append(KEY, "user" if index % 2 == 0 else "assistant", f"m{index}", 1)
        window = await store.recent(KEY, 4)
        if window.chats is not None:  # a store that holds windows in memory
            assert window.chats == [m.as_chat() for m in window.messages]
