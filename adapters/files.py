"""Files on Slack and Discord messages, as neutral Attachments.

Each Attachment's fetch downloads from the platform's own file hosts only (never from a
URL in a message's text): Slack's url_private with the bot token on Slack's hosts or
the host of PARLEY_SLACK_API_URL; Discord's attachment CDN or the host of
PARLEY_DISCORD_API_URL. Redirects are followed only within the same hosts, and
downloads are bounded in size (the engine's limit) and time ([attachments]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from bot.fetching import bounded_get
from bot.messages import Attachment, Fetch

SLACK_HOST_SUFFIXES = ("slack.com", "slack-edge.com", "slack-gov.com", "slack-files.com")
DISCORD_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
MAX_FILES_READ = 50  # an event listing more files is not worth describing past this


def host_of(url: str) -> str:
    return (URL(url).host or "").lower() if url else ""


def slack_host_check(api_url: str) -> Callable[[URL], str]:
    def on_slack(host: str) -> bool:
        return any(host == s or host.endswith("." + s) for s in SLACK_HOST_SUFFIXES)

    return _host_check(api_url, on_slack, "Slack")


def discord_host_check(api_url: str) -> Callable[[URL], str]:
    return _host_check(api_url, DISCORD_HOSTS.__contains__, "Discord")


def _host_check(
    api_url: str, platform_host: Callable[[str], bool], platform: str
) -> Callable[[URL], str]:
    """Why a URL may not be downloaded from ("" when it may): the platform's own hosts
    over HTTPS, or the configured API host (a proxy, a test's fake) as configured:
    plain HTTP only when the API URL itself is (the token must not go out in clear)."""
    own = host_of(api_url)
    schemes = ("https", "http") if api_url.startswith("http://") else ("https",)

    def check(url: URL) -> str:
        host = (url.host or "").lower()
        if host and host == own and url.scheme in schemes:
            return ""
        if platform_host(host):
            return "" if url.scheme == "https" else "not a secure link"
        return f"not on {platform}'s file hosts"

    return check


def fetcher(
    url: str, check: Callable[[URL], str], timeout: float, headers: Mapping[str, str] | None = None
) -> Fetch:
    """A fetch for one file: a bounded GET in a session of its own."""

    async def fetch(max_bytes: int) -> bytes:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            fetched = await bounded_get(
                session, url, max_bytes=max_bytes, allowed=check, headers=headers
            )
        return fetched.body

    return fetch


def file_objects(files: object) -> tuple[Mapping[str, Any], ...]:
    """A Slack event's `files` (unchecked input): its objects, at most MAX_FILES_READ."""
    if not isinstance(files, list):
        return ()
    return tuple(item for item in files[:MAX_FILES_READ] if isinstance(item, Mapping))


def slack_attachments(
    files: tuple[Mapping[str, Any], ...], token: str, api_url: str, timeout: float
) -> tuple[Attachment, ...]:
    """Slack file objects as Attachments that download url_private with the token."""
    check = slack_host_check(api_url)
    auth = {"Authorization": f"Bearer {token}"}
    found: list[Attachment] = []
    for item in files:
        url = _text(item, "url_private_download") or _text(item, "url_private")
        name = _text(item, "name") or _text(item, "title") or "file"
        fetch = fetcher(url, check, timeout, auth) if url else None
        found.append(Attachment(name, _text(item, "mimetype"), _size(item), fetch))
    return tuple(found)


def discord_attachments(
    attachments: list[Any], api_url: str, timeout: float
) -> tuple[Attachment, ...]:
    """discord.Attachment objects (read by attribute: no discord import here)."""
    check = discord_host_check(api_url)
    return tuple(
        Attachment(
            str(item.filename),
            str(item.content_type or ""),
            int(item.size or 0),
            fetcher(str(item.url), check, timeout),
        )
        for item in attachments[:MAX_FILES_READ]
    )


def _text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


def _size(item: Mapping[str, Any]) -> int:
    value = item.get("size")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
