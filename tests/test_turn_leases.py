"""Turn leases on both stores: a process never takes over its own live turns, even when
it could not renew them in time (another process held the database's write lock)."""

from __future__ import annotations

import asyncio

from bot.messages import ConversationKey
from bot.store import Store

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
