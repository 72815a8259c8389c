"""Turn leases on both stores: a process never takes over its own live turns, even when
it could not renew them in time (another process held the database's write lock)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot import turns
from bot.messages import ConversationKey
from bot.store import Store
from bot.turns import TurnKeeper
from tests.conftest import message, settings_for_tests

KEY = ConversationKey("test", "w", "c")


async def test_a_lapsed_lease_of_a_live_process_is_renewed_not_taken_over(store: Store) -> None:
    turn = await store.begin_turn(("ev:1",), KEY, "alive", 0.05, "{}")
    assert turn is not None
    await asyncio.sleep(0.1)  # the lease ran out: renewal was held up
    # The process itself looks for stale turns: its own live one is not among them.
    assert await store.claim_stale_turns("alive", 10.0, ("test",), 10) == []
    await store.renew_turns("alive", 10.0)
    assert await store.claim_stale_turns("other", 10.0, ("test",), 10) == []


async def test_a_released_turn_is_taken_over_even_by_the_process_that_let_go(
    store: Store,
) -> None:
    turn = await store.begin_turn(("ev:2",), KEY, "stopping", 10.0, "{}")
    assert turn is not None
    await store.release_turn(turn.id, "stopping")
    await store.renew_turns("stopping", 10.0)  # let go of: renewing does not keep it
    [stale] = await store.claim_stale_turns("stopping", 10.0, ("test",), 10)
    assert stale.id == turn.id


async def test_a_second_delivery_to_the_same_process_needs_no_store_call(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, ...]] = []
    begin_turn = store.begin_turn

    async def counted(keys: tuple[str, ...], *rest: Any) -> Any:
        asked.append(keys)
        return await begin_turn(keys, *rest)

    monkeypatch.setattr(store, "begin_turn", counted)
    monkeypatch.setattr(turns, "CLAIMED_KEPT", 2)  # keys remembered in memory
    keeper = TurnKeeper(store, settings_for_tests(tmp_path), answer_stale=None)  # type: ignore[arg-type]
    try:
        # Slack sends a mention twice (app_mention, message): one key in common.
        mention = message("hi", dedupe_keys=("slack:event:E1", "slack:msg:1"))
        echo = message("hi", dedupe_keys=("slack:event:E2", "slack:msg:1"))
        assert await keeper.begin(mention) is not None
        assert await keeper.begin(echo) is None
        assert asked == [mention.dedupe_keys]
        # Past the memory's bound the store still refuses it, with one call more.
        assert await keeper.begin(message("next", dedupe_keys=("slack:event:E3", "slack:msg:2")))
        assert await keeper.begin(echo) is None
        assert asked[-1] == echo.dedupe_keys and len(asked) == 3
    finally:
        await keeper.close()
