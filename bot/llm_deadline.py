"""Deadlines of one model call: the whole call's, and each attempt's first token.

The transport's own timeout (model.timeout_seconds) bounds each wait for the next bytes,
so an endpoint that drips a chunk every few seconds would never hit it; these bound the
call as the user lives it. The call's deadline covers every attempt and the waits
between them (the user waits for all of it) and is final; a late first token gives up
only the attempt, which is retried while the call has time left.

Deadlines are on the event loop's clock and applied to one await at a time: a
timeout spanning the stream's yields would fire while the consumer (an adapter posting
to its platform) runs, and cancel the consumer instead of the read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

from tenacity import RetryCallState
from tenacity.stop import stop_base

T = TypeVar("T")


class CallTooLong(Exception):
    """The call's deadline passed: final, never retried."""


class FirstTokenLate(Exception):
    """An attempt's first token did not come in time: that attempt is given up."""


class Deadlines:
    """When one model call must be over, and when its current attempt must have begun
    to answer (text, a tool call or a finish), in the loop's time; inf: none."""

    __slots__ = ("call", "deadline_seconds", "first_token", "first_token_seconds", "loop")

    def __init__(self, deadline_seconds: float | None, first_token_seconds: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline_seconds = deadline_seconds or math.inf
        self.first_token_seconds = first_token_seconds or math.inf
        self.call = self.loop.time() + self.deadline_seconds
        self.first_token = self.call

    def start_attempt(self) -> None:
        self.first_token = min(self.call, self.loop.time() + self.first_token_seconds)

    def time_left(self) -> float:
        return self.call - self.loop.time()


async def within(due: float, deadlines: Deadlines, awaitable: Awaitable[T]) -> T:
    """Await, giving up at `due` (a loop time): CallTooLong if that is the call's own
    deadline, else FirstTokenLate. About 4 us, paid once per read of the stream (reads
    come at most every READ_BATCH_SECONDS), not per chunk."""
    timeout = asyncio.timeout_at(due if due < math.inf else None)
    try:
        async with timeout:
            return await awaitable
    except TimeoutError:
        if not timeout.expired():
            raise  # the transport's own timeout, reported as before
        if due >= deadlines.call:
            raise CallTooLong(f"no answer within {deadlines.deadline_seconds:g} s") from None
        raise FirstTokenLate(f"no first token within {deadlines.first_token_seconds:g} s") from None


class OutOfTime(stop_base):
    """Stop retrying when the wait before the next attempt would end past the call's
    deadline: that attempt could not finish in time anyway."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep >= self.deadlines.time_left()
