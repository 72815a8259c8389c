"""The web chat's limits per client address and in total (adapters/web_limits.py).

A new session cookie is a new user with fresh per-user limits, so these are what stop
one client from getting an answer per cookie it makes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.web import create
from adapters.web_limits import WebChatLimits, address_key, client_address
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.test_web_helpers import ask, browser_like, receive, serve

Chat = Callable[..., Any]


@pytest.fixture
async def chat_url(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    """chat_url(**settings) -> the URL of a running web chat with those settings."""
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    monkeypatch.delenv("PARLEY_ADMIN_TOKEN", raising=False)
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> str:
            # 20 a minute per user, as by default: each new session gets all 20.
            engine = make_engine(requests_per_minute=20, **settings)
            return await stack.enter_async_context(serve(engine, create(engine, engine.settings)))

        yield start


async def one_message_per_new_session(
    url: str, sessions: int, forwarded_for: Callable[[int], str] | None = None
) -> list[dict[str, Any]]:
    """Each time a new browser (a new session cookie) asks one question; the last frame
    before "done" of each answer."""
    results = []
    for number in range(sessions):
        headers = {"X-Forwarded-For": forwarded_for(number)} if forwarded_for else {}
        async with browser_like() as client:
            async with client.get(url + "/", headers=headers) as page:
                assert page.status == 200
            async with client.ws_connect(url + "/ws", origin=url, headers=headers) as socket:
                await receive(socket)  # history
                frames = await ask(socket, f"question {number}")
        results.append(frames[-2])
    return results


def refusals(frames: list[dict[str, Any]], words: str) -> int:
    return sum(frame["type"] == "error" and words in frame["text"] for frame in frames)


async def test_new_sessions_from_one_address_share_its_limit(
    chat_url: Chat, fake_openai: FakeOpenAI
) -> None:
    url = await chat_url(web_rpm_per_address=3)
    last_frames = await one_message_per_new_session(url, 10)
    answered = [frame for frame in last_frames if frame["type"] == "final"]
    assert len(answered) == 3
    assert refusals(last_frames, "Too many messages from your network") == 7
    assert fake_openai.request_count == 3


async def test_the_total_limit_holds_across_addresses(
    chat_url: Chat, fake_openai: FakeOpenAI
) -> None:
    url = await chat_url(web_rpm_per_address=100, web_rpm_total=4, trusted_proxies=("127.0.0.1",))
    last_frames = await one_message_per_new_session(url, 7, lambda n: f"203.0.113.{n}")
    assert sum(frame["type"] == "final" for frame in last_frames) == 4
    assert refusals(last_frames, "The web chat is busy") == 3
    assert fake_openai.request_count == 4


@pytest.mark.parametrize(("trusted", "answered"), [((), 2), (("127.0.0.0/8",), 6)])
async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
    chat_url: Chat, trusted: tuple[str, ...], answered: int
) -> None:
    url = await chat_url(web_rpm_per_address=2, trusted_proxies=trusted)
    last_frames = await one_message_per_new_session(url, 6, lambda n: f"198.51.100.{n}")
    assert sum(frame["type"] == "final" for frame in last_frames) == answered


async def test_refusals_are_counted_in_metrics(chat_url: Chat) -> None:
    url = await chat_url(web_rpm_per_address=1)
    await one_message_per_new_session(url, 3)
    async with browser_like() as client, client.get(url + "/metrics") as response:
        text = await response.text()
    samples = {
        sample.labels.get("limit"): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "parley_rate_limit_refusals_total"
    }
    assert samples.get("web_address") == 2


# --- which address a request comes from ---------------------------------------------


PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", "1.1.1.1", PROXIES, "203.0.113.5"),  # not from a proxy: ignored
        ("10.0.0.1", "1.1.1.1", (), "10.0.0.1"),  # no proxies configured: ignored
        ("10.0.0.1", "6.6.6.6, 203.0.113.7", PROXIES, "203.0.113.7"),  # right-most wins
        ("10.0.0.1", "203.0.113.7, 10.0.0.2", PROXIES, "203.0.113.7"),  # proxy chain
        ("10.0.0.1", "junk", PROXIES, "10.0.0.1"),  # unreadable: the proxy itself
        ("10.0.0.1", "", PROXIES, "10.0.0.1"),
        ("::ffff:203.0.113.9", "", (), "203.0.113.9"),  # IPv4 over an IPv6 socket
        (None, "1.1.1.1", PROXIES, "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: str, trusted: Any, expected: str) -> None:
    assert address_key(client_address(peer, forwarded, trusted)) == expected


def test_an_ipv6_slash_64_is_one_address() -> None:
    first = address_key(client_address("2001:db8:1:2::1", "", ()))
    other_host_same_net = address_key(client_address("2001:db8:1:2:ffff::9", "", ()))
    other_net = address_key(client_address("2001:db8:1:3::1", "", ()))
    assert first == other_host_same_net == "2001:db8:1:2::/64"
    assert other_net != first


def test_the_window_slides() -> None:
    now = [0.0]
    limits = WebChatLimits(per_address=2, total=0, clock=lambda: now[0])
    assert limits.admit("a") is None and limits.admit("a") is None
    refusal = limits.admit("a")
    assert refusal is not None and "60 seconds" in refusal.text
    assert limits.admit("b") is None  # another address is not affected
    now[0] = 59.5
    assert limits.admit("a") is not None
    now[0] = 60.0
    assert limits.admit("a") is None


def test_zero_means_unlimited() -> None:
    limits = WebChatLimits(per_address=0, total=0)
    assert all(limits.admit("a") is None for _ in range(1000))
