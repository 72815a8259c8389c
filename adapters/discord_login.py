"""Logging in to Discord at start-up, so a login that cannot work stops Parley with one
line: a refused token at once; an API that cannot be reached after retrying with
backoff for discord.login_retry_seconds. The gateway connects afterwards, in the
background, where discord.py itself reconnects."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord

from bot.startup import StartupError

log = logging.getLogger(__name__)
FIRST_WAIT_SECONDS = 1.0
LONGEST_WAIT_SECONDS = 30.0


async def login(client: discord.Client, token: str, retry_seconds: float, api: str) -> None:
    """client.login(token), retried while the network fails; StartupError when it will
    not work. The client is closed before raising."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_seconds
    wait = FIRST_WAIT_SECONDS
    while True:
        try:
            await client.login(token)
            return
        except discord.LoginFailure:
            await client.close()
            raise StartupError(
                "Discord refused DISCORD_BOT_TOKEN: reset it under Bot in the Developer "
                "Portal and set DISCORD_BOT_TOKEN again"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError, discord.HTTPException) as error:
            if loop.time() + wait > deadline:
                await client.close()
                raise StartupError(
                    f"Discord's API at {api} cannot be reached ({error or type(error).__name__}) "
                    f"after {retry_seconds:g} s of retries (discord.login_retry_seconds): "
                    "check the network, or PARLEY_DISCORD_API_URL"
                ) from None
            log.warning("Discord login failed (%s); retrying in %.0f s", error, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)
