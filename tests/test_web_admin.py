"""GET /admin: the usage dashboard behind PARLEY_ADMIN_TOKEN, over a real socket."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession
from yarl import URL

from adapters.web import create
from adapters.web_admin import Dashboard, render
from adapters.web_auth import ADMIN_COOKIE, ADMIN_MAX_AGE, cookie_value
from bot.charts import format_cost
from bot.engine import Engine
from tests.conftest import EngineFactory, collect, message
from tests.fakes.openai_server import FakeOpenAI, Status, Text
from tests.test_web_helpers import browser_like, serve

TOKEN = "the-admin-token"


@dataclass
class Site:
    url: str
    engine: Engine


@pytest.fixture
async def site(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Site]:
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    engine = make_engine()
    await engine.store.set_user_limit("test:mallory", "blocked", 1)
    fake_openai.script(
        Text("one", prompt_tokens=1000, completion_tokens=234),
        Status(500), Status(500), Status(500),
        Text("two", prompt_tokens=500, completion_tokens=100),
    )  # fmt: skip
    await collect(engine, message("hello", user="alice", channel="general"))
    await collect(engine, message("fail", user="alice", channel="general"))
    await collect(engine, message("hi", user="<script>alert(1)</script>", channel="random"))
    await collect(engine, message("let me in", user="mallory"))
    async with serve(engine, create(engine, engine.settings)) as url:
        yield Site(url, engine)


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with ClientSession() as client, client.get(url, headers=headers) as response:
        return response.status, await response.text()


async def test_admin_is_404_when_no_admin_token_is_configured(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARLEY_ADMIN_TOKEN")
    for attempt in ("/admin", "/admin?token=", "/admin?token=the-admin-token"):
        status, _ = await fetch(site.url + attempt)
        assert status == 404
    status, _ = await fetch(site.url + "/admin", {"Authorization": "Bearer "})
    assert status == 404


async def test_admin_without_a_token_is_401(site: Site) -> None:
    async with ClientSession() as client, client.get(site.url + "/admin") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body = await response.text()
    assert "alice" not in body and "1,234" not in body


@pytest.mark.parametrize(
    "headers, query",
    [
        ({"Authorization": "Bearer wrong"}, ""),
        ({"Authorization": f"Basic {TOKEN}"}, ""),
        ({"Authorization": f"Bearer {TOKEN}x"}, ""),
        ({}, "?token=wrong"),
        ({}, "?token="),
    ],
)
async def test_admin_with_a_wrong_token_is_403(
    site: Site, headers: dict[str, str], query: str
) -> None:
    status, body = await fetch(site.url + "/admin" + query, headers)
    assert status == 403
    assert "alice" not in body


async def test_a_forged_cookie_is_not_a_sign_in(site: Site) -> None:
    headers = {"Cookie": f"parley_admin={TOKEN}"}
    status, _ = await fetch(site.url + "/admin", headers)
    assert status == 401


async def test_an_admin_cookie_expires_on_the_server_after_8_hours(site: Site) -> None:
    now = time.time()
    fresh = cookie_value(TOKEN, ADMIN_COOKIE, issued=now - ADMIN_MAX_AGE + 60)
    stale = cookie_value(TOKEN, ADMIN_COOKIE, issued=now - ADMIN_MAX_AGE - 1)
    other = cookie_value(TOKEN, "parley_web", issued=now)  # another cookie's signature
    for value, status in ((fresh, 200), (stale, 401), (other, 401)):
        got, _ = await fetch(site.url + "/admin", {"Cookie": f"{ADMIN_COOKIE}={value}"})
        assert got == status, value


async def test_a_signed_in_cookie_carries_its_issue_time(site: Site) -> None:
    async with browser_like() as client:
        async with client.get(site.url + f"/admin?token={TOKEN}", allow_redirects=False) as done:
            cookie = done.cookies[ADMIN_COOKIE]
    issued, _, signature = cookie.value.partition(".")
    assert abs(int(issued) - time.time()) < 60 and len(signature) == 64
    assert cookie["max-age"] == str(ADMIN_MAX_AGE)


async def test_dashboard_shows_figures_with_the_right_token(site: Site) -> None:
    status, page = await fetch(site.url + "/admin?since=30d", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert "Parley usage, last 30d" in page
    # alice: 1,234 tokens in 2 requests, one of them an error; the other user 600.
    assert re.search(r"<td>test:alice</td><td class=\"n\">2</td><td class=\"n\">1,234</td>", page)
    assert "<td>test:general</td>" not in page and "test:w1:general" in page
    assert ">1,834<" in page  # total tokens card
    assert format_cost((1500 * 0.15 + 334 * 0.60) / 1e6) in page  # gpt-4o-mini list price
    assert "33.3% (1 errors)" in page  # error rate: 1 of 3 calls
    assert "<td>blocked</td>" in page  # refusal by kind
    assert page.count("<svg") == 2 and "<rect" in page


async def test_names_from_chat_are_escaped(site: Site) -> None:
    status, page = await fetch(site.url + "/admin", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page  # the dashboard runs no script at all


async def test_token_in_the_url_signs_the_browser_in_with_a_cookie(site: Site) -> None:
    async with browser_like() as client:
        async with client.get(
            site.url + f"/admin?since=24h&token={TOKEN}", allow_redirects=False
        ) as signed_in:
            assert signed_in.status == 303
            assert signed_in.headers["Location"] == "/admin?since=24h"
            cookie = signed_in.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        async with client.get(site.url + "/admin?since=24h") as page:
            assert page.status == 200
            assert "test:alice" in await page.text()
            csp = page.headers["Content-Security-Policy"]
        async with client.get(site.url + "/admin/admin.css") as style:
            assert style.status == 200 and style.content_type == "text/css"
    assert "default-src 'self'" in csp


@pytest.mark.parametrize("period", ["banana", "7", "0d", "<b>7d</b>"])
async def test_a_bad_period_says_how_to_write_one(site: Site, period: str) -> None:
    async with ClientSession() as client:
        response = await client.get(
            site.url + "/admin",
            params={"since": period},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        body = await response.text()
    assert response.status == 400
    assert "is not understood" in body and "e.g. 30m, 12h, 7d, 4w" in body
    assert "<b>" not in body


async def test_an_encoded_token_signs_in_but_never_reaches_the_access_log(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):  # as -v: every request
        async with browser_like() as client:
            # encoded=True: sent as written (yarl would otherwise decode %74 itself).
            url = URL(site.url + f"/admin?%74oken={TOKEN}&since=24h", encoded=True)
            signed_in = await client.get(url, allow_redirects=False)
            assert signed_in.status == 303  # aiohttp decodes the name: it is a sign-in
            async with client.get(site.url + "/admin?since=24h") as page:
                assert page.status == 200
    logged = [record.getMessage() for record in caplog.records]
    assert any("%74oken=[redacted]" in line for line in logged)
    assert not any(TOKEN in line for line in logged)


@pytest.mark.parametrize("period", ["365000d", "1000000d", "401d", "9" * 5000 + "d"])
async def test_a_period_past_the_bound_is_refused_at_once(site: Site, period: str) -> None:
    status, body = await fetch(
        site.url + f"/admin?since={period}", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 400
    assert "is too long: at most 400 days" in body
    assert len(body) < 20_000  # an error page, not a million empty days


async def test_the_longest_period_is_drawn_off_the_event_loop(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = []

    def recording(data: Dashboard) -> str:
        threads.append(threading.current_thread())
        return render(data)

    monkeypatch.setattr("adapters.web_admin.render", recording)
    status, page = await fetch(site.url + "/admin?since=400d", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert page.count("<tr>") > 400  # a row per day, and the other tables
    assert threads and threads[0] is not threading.main_thread()


async def test_a_signed_in_admin_is_an_admin_in_the_web_chat(site: Site) -> None:
    async with browser_like() as client:
        await client.get(site.url + f"/admin?token={TOKEN}")
        await client.get(site.url + "/")
        async with client.ws_connect(site.url + "/ws", origin=site.url) as socket:
            await socket.receive_json()
            await socket.send_json({"type": "message", "text": "/usage 30d"})
            reply = await socket.receive_json()
    assert reply["type"] == "final" and "test:alice" in reply["text"]


async def test_the_audit_log_table_filters_by_user_and_action(site: Site) -> None:
    audit = site.engine.safety.audit
    where = ("slack", "T1", "C1")
    await audit.record("slack:UA", where, "block", "slack:U2", "20 requests/minute", "BLOCKED")
    await audit.record("slack:UB", where, "model", "slack:T1:C1", "(default)", "<b>gpt</b>")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status, page = await fetch(site.url + "/admin?since=7d", headers)
    assert status == 200 and "Audit log" in page
    assert "<td>block</td>" in page and "<td>model</td>" in page
    assert "&lt;b&gt;gpt&lt;/b&gt;" in page and "<b>gpt" not in page
    _, only = await fetch(site.url + "/admin?since=7d&user=slack:U2", headers)
    assert "<td>block</td>" in only and "<td>model</td>" not in only
    assert 'name="user" value="slack:U2"' in only
    _, by_action = await fetch(site.url + "/admin?since=7d&action=model", headers)
    assert "<td>model</td>" in by_action and "<td>block</td>" not in by_action
