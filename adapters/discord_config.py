"""Discord settings from the environment: servers, endpoints, intents, the invite URL.

discord.py keeps its REST base and gateway URL in class attributes (Route.BASE and
DiscordWebSocket.DEFAULT_GATEWAY); PARLEY_DISCORD_API_URL and PARLEY_DISCORD_GATEWAY_URL
set them, for proxies and for tests against a fake Discord.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.config import ConfigError

INVITE_SCOPES = ("bot", "applications.commands")
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True,
    create_public_threads=True, read_message_history=True, embed_links=True,
    attach_files=True,
)  # fmt: skip
# discord.py's own defaults, so an adapter created without overrides reaches Discord
# even after another one in the same process was pointed elsewhere.
DEFAULT_API_URL = f"https://discord.com/api/v{discord.http.INTERNAL_API_VERSION}"
DEFAULT_GATEWAY = yarl.URL("wss://gateway.discord.gg/")


def guild_ids(value: str) -> list[int]:
    """DISCORD_GUILD_IDS: a comma list of server ids."""
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(
            f"DISCORD_GUILD_IDS must be a comma list of server ids, got {value!r}"
        ) from None


def configure_endpoints(environ: Mapping[str, str]) -> yarl.URL | None:
    """Point discord.py at PARLEY_DISCORD_API_URL / _GATEWAY_URL (or Discord's own).

    Returns the gateway to pin when one is configured: Discord's READY names its own
    resume host, which would bypass a proxy on the first reconnect.
    """
    api = environ.get("PARLEY_DISCORD_API_URL", "").strip().rstrip("/")
    if api and not re.search(r"/v\d+$", api):
        api += "/v10"  # discord.py's routes start after the version, as in /api/v10
    Route.BASE = api or DEFAULT_API_URL
    gateway = environ.get("PARLEY_DISCORD_GATEWAY_URL", "").strip()
    # discord.py adds ?v=10&encoding=json&compress=... itself, replacing any query.
    pinned = yarl.URL(gateway).with_query(None) if gateway else None
    DiscordWebSocket.DEFAULT_GATEWAY = pinned or DEFAULT_GATEWAY
    return pinned


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(
        application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES
    )


def intents() -> discord.Intents:
    chosen = discord.Intents.default()
    chosen.message_content = True  # privileged: enable it in the Developer Portal too
    return chosen
