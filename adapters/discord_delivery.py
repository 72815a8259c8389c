"""Getting answers to Discord while Discord refuses: a stored answer is retried with
backoff until it is shown (or the failure is counted), and an interaction can always be
told something.

discord.py retries a 429 a few times within one request and then gives up; under a
storm of them, an answer the engine had stored was never shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
import discord
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from adapters.discord_reply import NO_MENTIONS, Reply, SendErrors, describe_error

log = logging.getLogger(__name__)

ALREADY_ACKNOWLEDGED = 40060  # Discord's error code


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often, and how patiently, a stored answer is offered to Discord again."""

    retries: int = 6
    first_wait: float = 1.0
    max_wait: float = 60.0

    def wait(self, retry: int, error: Exception | None) -> float:
        """Seconds before retry number `retry` (1, 2, ...): doubling, or what Discord asked."""
        doubling = self.first_wait * 2.0 ** (retry - 1)
        asked = float(error.retry_after) if isinstance(error, discord.RateLimited) else 0.0
        return min(self.max_wait, max(doubling, asked))


def transient(error: Exception | None) -> bool:
    """A failure that trying again later may cure (rate limits, Discord or network faults)."""
    if isinstance(error, discord.RateLimited | aiohttp.ClientError | TimeoutError):
        return True
    if isinstance(error, discord.HTTPException):
        return error.status == 429 or error.status >= 500
    return False


def acknowledged_already(error: Exception) -> bool:
    """The interaction was acknowledged before (a replay after a resume), here or by
    Discord's count (40060): someone is answering it already."""
    if isinstance(error, discord.InteractionResponded):
        return True
    return isinstance(error, discord.HTTPException) and error.code == ALREADY_ACKNOWLEDGED


async def deliver(reply: Reply, backoff: Backoff) -> bool:
    """Offer the final answer again, with backoff, until it is all shown: True once it
    is, False when the failure is not transient or the retries ran out."""
    tries = 0

    async def shown() -> bool:
        nonlocal tries
        tries += 1
        if tries > 1:  # the first "try" is the engine's own delivery, already made
            await reply.redeliver()
        return not reply.undelivered()

    def wait(state: RetryCallState) -> float:
        return backoff.wait(state.attempt_number, reply.last_error)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(backoff.retries + 1),
        wait=wait,
        retry=retry_if_result(lambda ok: not ok and transient(reply.last_error)),
        retry_error_callback=lambda _: False,
    )
    return bool(await retrying(shown))


async def tell(interaction: discord.Interaction[discord.Client], text: str) -> None:
    """A short private answer to an interaction, acknowledged or not; failures logged."""
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=NO_MENTIONS
            )
    except (*SendErrors, discord.InteractionResponded) as error:
        log.warning("could not answer interaction %s: %s", interaction.id, describe_error(error))
