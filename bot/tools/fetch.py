"""fetch_url: the model reads a web page (GET only), on hosts the operator allows.

Off unless `[tools.fetch] allow_hosts` lists hosts: "docs.python.org" (that host),
"*.example.com" (its subdomains and itself) or "*" (any public host). Whatever the
model asks, the request is a GET, bounded in size and time, redirects are followed
only to allowed hosts, and an address in a loopback, private, link-local (cloud
metadata) or other non-public range is refused unless its host is listed by name or
address exactly: a wildcard never reaches inside the network Parley runs in. Names
are resolved once and the connection goes to the address that was checked
(bot/fetching.GuardedResolver), so DNS rebinding cannot slip past the check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from bot.attachments import FetchError, off_loop
from bot.config import FetchSettings
from bot.extract import Unreadable, decode_text, pdf_text
from bot.fetching import GuardedResolver, bounded_get, refused_address
from bot.tools.registry import Registry, ToolResult

USER_AGENT = "Parley-fetch_url/1 (a chat assistant reading a page a user asked about)"
_BLANK_LINES = re.compile(r"\n\s*\n+")
# Elements that are never the page's text.
_NOT_TEXT = ("script", "style", "noscript", "template", "svg", "iframe", "head", "nav", "form")


class HostRules:
    """Which hosts may be fetched, from tools.fetch.allow_hosts."""

    def __init__(self, allow_hosts: tuple[str, ...]) -> None:
        self.any_public = "*" in allow_hosts
        self.exact = frozenset(h for h in allow_hosts if not h.startswith("*"))
        self.suffixes = tuple(h[2:] for h in allow_hosts if h.startswith("*."))

    def listed_exactly(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.exact

    def why_not(self, url: URL) -> str:
        """Why this URL may not be fetched; "" when it may."""
        if url.scheme not in ("http", "https"):
            return "only http and https URLs can be fetched"
        host = (url.host or "").lower().rstrip(".")
        if not host:
            return "the URL has no host"
        wildcard = self.any_public or any(
            host == s or host.endswith("." + s) for s in self.suffixes
        )
        if not (self.listed_exactly(host) or wildcard):
            return f"{host} is not in tools.fetch.allow_hosts"
        if _is_address(host) and not self.listed_exactly(host):
            if why := refused_address(host):
                return f"{host} is a {why} address, which is refused unless listed exactly"
        return ""


def make_fetch_url(settings: FetchSettings) -> Callable[[str], Awaitable[str | ToolResult]]:
    rules = HostRules(settings.allow_hosts)

    async def fetch_url(url: str) -> str | ToolResult:
        """Read a web page (HTTP GET) and return its text.

        Args:
            url: The full http(s) URL of the page.
        """
        try:
            return await _fetch_text(url, rules, settings)
        except (FetchError, Unreadable) as error:
            return ToolResult(f"Error: {url} could not be read: {error}", ok=False,
                              error_kind="exception")  # fmt: skip

    return fetch_url


def register_fetch(registry: Registry, settings: FetchSettings) -> None:
    """Add fetch_url when some host is allowed."""
    if not settings.allow_hosts:
        return
    hosts = ", ".join(settings.allow_hosts)
    registry.tool(
        make_fetch_url(settings),
        name="fetch_url",
        description=f"Read a web page (HTTP GET) and return its text. Allowed hosts: {hosts}.",
    )


async def _fetch_text(url: str, rules: HostRules, settings: FetchSettings) -> str:
    resolver = GuardedResolver(rules.listed_exactly)
    connector = aiohttp.TCPConnector(resolver=resolver, limit=4)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html, text/plain, */*;q=0.5"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        fetched = await bounded_get(
            session, url, max_bytes=settings.max_bytes, allowed=rules.why_not, headers=headers
        )
    kind = fetched.content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        text = await off_loop(html_to_text, fetched.body)
    elif kind == "application/pdf":
        text = await off_loop(pdf_text, fetched.body, settings.max_chars)
    elif kind.startswith("text/") or kind.endswith(("json", "xml")) or not kind:
        text = decode_text(fetched.body)
    else:
        raise Unreadable(f"it is {kind}, not text")
    if len(text) > settings.max_chars:
        text = text[: settings.max_chars] + f"\n[… cut at {settings.max_chars:,} characters]"
    return f"{fetched.url}\n\n{text}"


def html_to_text(html: bytes) -> str:
    """The readable text of a page: title, then the body's text, without scripts,
    styles, navigation and forms, one block a line."""
    from bs4 import BeautifulSoup  # imported on first use: most deployments never fetch

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for element in soup(_NOT_TEXT):
        element.decompose()
    body = soup.body or soup
    text = _BLANK_LINES.sub("\n\n", body.get_text("\n", strip=True))
    return f"{title}\n\n{text}".strip() if title else text


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
