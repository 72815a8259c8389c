"""The web chat's limits per client address and in total, on top of the per-user ones.

A web chat user is a browser session, and a new session is only a new cookie: the
per-user limits alone let anyone get as many answers as sessions they make. So messages
are also counted per client address and for everyone together, over the last minute.
Kept in memory: a restart forgets them, as it would a minute later anyway.

The client address is the connection's peer, with an IPv6 /64 counted as one address
(one host usually holds a whole /64). X-Forwarded-For is believed only from the proxies
in web.trusted_proxies, else anyone could name any address in it.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
# Addresses remembered at once; past this, the quietest are forgotten first. The total
# limit still holds whatever is forgotten.
MAX_ADDRESSES = 10_000
IPV6_PREFIX = 64
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Refusal:
    text: str
    kind: str  # the metrics label: web_address or web_total


def parse_address(text: str) -> Address | None:
    """An IP address from a peer name or an X-Forwarded-For entry ("[::1]", "1.2.3.4")."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded: str, trusted: Iterable[Network]) -> Address | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the
    right-most X-Forwarded-For entry that is not a trusted proxy itself."""
    networks = tuple(trusted)
    address = parse_address(peer or "")
    if address is None or not networks:
        return address
    for hop in reversed(forwarded.split(",")):
        if not any(address in network for network in networks):
            break  # `address` was added by an untrusted party: stop believing the rest
        hop_address = parse_address(hop)
        if hop_address is None:
            break
        address = hop_address
    return address


def address_key(address: Address | None) -> str:
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


class SlidingWindow:
    """How many events each key had in the last `window` seconds."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.events: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """0 if `key` may have another event now, else seconds until it may."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        events = self.events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.window - now

    def add(self, key: str) -> None:
        if self.limit <= 0:
            return
        events = self.events.get(key)
        if events is None:
            self._make_room()
            events = self.events[key] = deque(maxlen=self.limit)
        events.append(self.clock())

    def _make_room(self) -> None:
        if len(self.events) < MAX_ADDRESSES:
            return
        now = self.clock()
        for key in [k for k, v in self.events.items() if not v or v[-1] <= now - self.window]:
            del self.events[key]
        while len(self.events) >= MAX_ADDRESSES:
            del self.events[next(iter(self.events))]


class WebChatLimits:
    """Decides whether one more web chat message from an address may go to the engine."""

    def __init__(
        self,
        per_address: int,
        total: int,
        trusted_proxies: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = SlidingWindow(per_address, WINDOW_SECONDS, clock)
        self.total = SlidingWindow(total, WINDOW_SECONDS, clock)
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)

    def key(self, peer: str | None, forwarded: str) -> str:
        return address_key(client_address(peer, forwarded, self.trusted))

    def admit(self, key: str) -> Refusal | None:
        """None, and the message counted, if it may go on; else why not."""
        if wait := self.per_address.wait(key):
            return Refusal(
                f"Too many messages from your network: at most {self.per_address.limit} a "
                f"minute. Try again in {_seconds(wait)}.",
                "web_address",
            )
        if wait := self.total.wait("all"):
            return Refusal(
                f"The web chat is busy: at most {self.total.limit} messages a minute for "
                f"everyone. Try again in {_seconds(wait)}.",
                "web_total",
            )
        self.per_address.add(key)
        self.total.add("all")
        return None


def _seconds(wait: float) -> str:
    whole = max(1, math.ceil(wait))
    return f"{whole} second{'s' if whole != 1 else ''}"
