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
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        ip = inner
    if ip.is_global:
        return ""
    for name in _REFUSED:
        if getattr(ip, f"is_{name}", False):
            return name.replace("_", "-")
    return "not a public address"  # shared (100.64/10), documentation ranges...


# IPv6 ranges that carry an IPv4 address in their low 32 bits, which a translator or
# tunnel may deliver to: IPv4-compatible (::/96, deprecated), SIIT (::ffff:0:0:0/96),
# NAT64 (64:ff9b::/96, 64:ff9b:1::/48). Python 3.11 calls some of them global.
_CARRIES_IPV4 = tuple(
    ipaddress.ip_network(net)
    for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a mapping, 6to4, Teredo or NAT64,
    so ::ffff:127.0.0.1, 2002:7f00:1:: or 64:ff9b::a9fe:a9fe is judged as that address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in ipaddress.ip_network("::/128") or ip in ipaddress.ip_network("::1/128"):
        return None  # unspecified and loopback are judged as IPv6
    if any(ip in net for net in _CARRIES_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class GuardedResolver(AbstractResolver):
    """Resolves names, keeping only addresses that may be reached; connections are
    made to what this returns. `trusted(host)`: names listed explicitly, which may
    resolve to private addresses (an intranet host someone chose to allow), though
    never to link-local ones (cloud metadata)."""

    def __init__(self, trusted: Callable[[str], bool]) -> None:
        self._resolver = DefaultResolver()
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        # A listed name may point inside the network (an intranet host), but never at
        # a link-local address, where cloud metadata services hand out credentials.
        trusted = self._trusted(host)
        allowed = [
            result for result in found
            if (why := refused_address(result["host"])) == ""
            or (trusted and why != "link-local")
        ]  # fmt: skip
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
