"""Turns: each claimed message's place in its conversation, across processes, and what
happens to the turns of a process that died or stopped mid-answer.

A message takes a turn when its delivery is claimed (one store call) and waits until
no older live turn of its conversation remains, on any replica. Its process renews
the lease of every turn it holds; a turn whose lease runs out (the process died, or
let go of it at shutdown) is taken over by a process that runs that platform's
adapter and answered there, once, or, when it is too old, the user is told that the
answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from bot.config import Settings
from bot.messages import ConversationKey, Message, ReplyEvent
from bot.store import Store, Turn
from bot.store.records import StaleTurn

log = logging.getLogger(__name__)

# How often a message whose conversation is busy on another replica looks again.
POLL_SECONDS = 0.02
# Stale turns taken over per look, so one process never swallows a whole backlog.
RECOVER_AT_ONCE = 20
# Delivery keys remembered in memory (about 100 bytes each): minutes of a busy team.
CLAIMED_KEPT = 10_000

# An adapter's way to deliver the answer to a message it did not receive itself.
Recoverer = Callable[[Message, AsyncIterator[ReplyEvent]], Awaitable[None]]


class TurnKeeper:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        answer_stale: Callable[[StaleTurn, Recoverer], Coroutine[Any, Any, None]],
    ) -> None:
        self.store = store
        self.settings = settings
        self.answer_stale = answer_stale
        # Who holds a turn's lease: this process, distinct from every other replica.
        self.owner = uuid.uuid4().hex
        self.recoverers: dict[str, Recoverer] = {}
        self._maintaining: asyncio.Task[None] | None = None
        self._recovering: set[asyncio.Task[None]] = set()
        # Messages of this process waiting for an older turn of their conversation;
        # entries go when their waiter does, so the map never outgrows what waits.
        self._waiting: dict[ConversationKey, set[asyncio.Event]] = {}
        # Delivery keys this process claimed lately, oldest first: a platform's second
        # delivery (Slack sends a mention as app_mention and as message; retries;
        # gateway replays) mostly comes to the process that took the first, which then
        # refuses it without a database write. The store stays the judge for the rest.
        self._claimed: dict[str, None] = {}

    async def begin(self, message: Message) -> Turn | None:
        """Claim the delivery and queue a turn; None for a delivery seen before."""
        self.start()
        if self.claimed_here(message.dedupe_keys):
            return None  # no need to ask the database
        turn = await self.store.begin_turn(
            message.dedupe_keys, message.conversation, self.owner,
            self.settings.lease_seconds, message.to_payload(),
        )  # fmt: skip
        if turn is not None:
            for key in message.dedupe_keys:
                self._claimed[key] = None
            while len(self._claimed) > CLAIMED_KEPT:
                del self._claimed[next(iter(self._claimed))]  # the oldest
        return turn

    def claimed_here(self, keys: tuple[str, ...]) -> bool:
        """This process claimed one of these delivery keys lately (False: ask the store)."""
        return any(key in self._claimed for key in keys)

    async def wait(self, conversation: ConversationKey, turn: Turn) -> None:
        """Return once no older turn of the conversation is live, on any replica."""
        if turn.first and not turn.behind_stale:
            return  # no older turn, live or dead
        if not turn.first:
            await self._until_first(conversation, turn)
        # An older turn whose process died no longer counts once its lease ran out, but
        # it is still to be answered: take it over now, so that it goes first, rather
        # than whenever the next look for stale turns comes. (Once: a turn the platform
        # keeps refusing is let go of again and must not hold this one for ever.) Then
        # wait again whatever the look found: another replica may have taken the older
        # turn over first, and its answer goes before this one too.
        if conversation.platform in self.recoverers:
            await self._take_over_stale()
        await self._until_first(conversation, turn)

    async def _take_over_stale(self) -> None:
        try:
            await self._recover()
        except Exception:  # the next look (the maintenance loop's) may succeed
            log.exception("looking for stale turns failed")

    async def _until_first(self, conversation: ConversationKey, turn: Turn) -> None:
        while not await self.store.is_first_turn(conversation, turn.id):
            # A turn of this process wakes us as it ends; another replica's is seen by
            # looking again, which is all a database without notifications allows.
            event = asyncio.Event()
            waiters = self._waiting.setdefault(conversation, set())
            waiters.add(event)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), POLL_SECONDS)
            finally:
                waiters.discard(event)
                if not waiters:
                    del self._waiting[conversation]

    def ended(self, conversation: ConversationKey) -> None:
        """A turn of this conversation ended here: wake its waiters in this process."""
        for event in self._waiting.get(conversation, ()):
            event.set()

    def recover_for(self, platform: str, recoverer: Recoverer) -> None:
        """Answer this platform's stale turns here (its adapter runs in this process)."""
        self.recoverers[platform] = recoverer
        self.start()

    def stop_recovering(self) -> None:
        """Take over no more stale turns (this process is stopping); leases of the turns
        held are still renewed while their answers finish."""
        self.recoverers.clear()

    def start(self) -> None:
        if self._maintaining is None or self._maintaining.done():
            self._maintaining = asyncio.create_task(self._maintain(), name="turns")

    async def close(self) -> None:
        """Stop renewing and recovering; turns still held run out and are recovered."""
        tasks = [task for task in (self._maintaining, *self._recovering) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._maintaining = None

    async def _maintain(self) -> None:
        every = self.settings.lease_seconds / 3
        while True:
            try:
                await self.store.renew_turns(self.owner, self.settings.lease_seconds)
                await self._recover()
            except Exception:  # the database may be back next time
                log.exception("keeping this process's turns failed")
            await asyncio.sleep(every)

    async def _recover(self) -> int:
        """Take over stale turns of the platforms answered here; how many."""
        if not self.recoverers:
            return 0
        stale = await self.store.claim_stale_turns(
            self.owner, self.settings.lease_seconds, tuple(self.recoverers), RECOVER_AT_ONCE
        )
        for turn in stale:
            recoverer = self.recoverers.get(turn.platform)
            if recoverer is None:  # stopped recovering meanwhile: for the next process
                await self.store.release_turn(turn.id, self.owner)
                continue
            task = asyncio.create_task(self.answer_stale(turn, recoverer))
            self._recovering.add(task)
            task.add_done_callback(self._recovering.discard)
        return len(stale)
