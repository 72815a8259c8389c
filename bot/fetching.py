"""Bounded HTTP GETs: the one way Parley downloads anything (platform files for
attachments, web pages for the fetch_url tool).

Every request is checked before it is sent, redirects included (followed by hand, each
hop checked again), and the body is read only up to a limit. For fetch_url the
connection also goes through GuardedResolver: a name is resolved once, the addresses
are checked, and the connection is made to a checked address, so a name that
resolves to a public address when checked and to a private one when connecting (DNS
rebinding) gets nowhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bot.attachments import FetchError, too_large

MAX_REDIRECTS = 5
CHUNK = 64 * 1024
# Cloud metadata services live at link-local addresses (169.254.169.254, fd00:ec2::254
# is unique-local): both fall under the ranges refused below.
_REFUSED = ("loopback", "link_local", "private", "reserved", "multicast", "unspecified")


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


def refused_address(address: str) -> str:
    """Why an address may not be reached ("" when it may): loopback, private..."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global:
        return ""
    for name in _REFUSED:
        if getattr(ip, f"is_{name}", False):
            return name.replace("_", "-")
    return "not a public address"  # shared (100.64/10), documentation ranges...


class GuardedResolver(AbstractResolver):
    """Resolves names, keeping only addresses that may be reached; connections are
    made to what this returns. `trusted(host)`: names listed explicitly, whose
    addresses are not checked (an intranet host someone chose to allow)."""

    def __init__(self, trusted: Callable[[str], bool]) -> None:
        self._resolver = DefaultResolver()
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        if self._trusted(host):
            return found
        allowed = [result for result in found if not refused_address(result["host"])]
        if not allowed:
            why = refused_address(found[0]["host"]) if found else "no address"
            raise OSError(f"{host} resolves to a {why} address, which is not allowed")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


async def bounded_get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    allowed: Callable[[URL], str],
    headers: Mapping[str, str] | None = None,
) -> Fetched:
    """GET url, following redirects only to URLs `allowed` returns "" for (it returns
    why not, otherwise), reading at most max_bytes. Raises FetchError."""
    target = URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        if why := allowed(target):
            raise FetchError(why)
        try:
            async with session.get(
                target, headers=dict(headers or {}), allow_redirects=False
            ) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    target = target.join(URL(response.headers["Location"]))
                    continue
                if response.status != 200:
                    raise FetchError(f"the server answered HTTP {response.status}")
                if (response.content_length or 0) > max_bytes:
                    raise FetchError(too_large(response.content_length or 0, max_bytes))
                body = await _read_at_most(response, max_bytes)
                return Fetched(str(target), response.headers.get("Content-Type", ""), body)
        except (aiohttp.ClientError, OSError) as error:
            raise FetchError(f"download failed ({_reason(error)})") from None
    raise FetchError("too many redirects")


async def _read_at_most(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(too_large(0, max_bytes))
    return bytes(body)


def _reason(error: BaseException) -> str:
    # One short line for the user; never a URL (it may carry a signed token).
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, aiohttp.ClientConnectorError) and error.os_error is not None:
        return str(error.os_error.strerror or error.os_error)[:200]
    return type(error).__name__
