"""What reaches POST /slack/events from outside: verified before it is parsed, checked
before it is read. Nothing anyone sends is a 500 or a traceback; signed requests that
Parley cannot use are ignored with a 200, so Slack does not retry them."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from adapters.slack_events import signature_valid
from tests.fakes.openai_server import Text
from tests.slack_helpers import SECRET, Harness, Start, mention, start

__all__ = ["start"]  # the fixture, for pytest to find here


async def post(h: Harness, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(h.send.url, data=body, headers=headers) as response:
            await h.adapter.drain()
            return response.status


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"null", {}),
        (b"[1]", {}),
        (b"not json", {"Content-Type": "application/json"}),
        (b"{}", {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=00"}),
        (b"{}", {"X-Slack-Request-Timestamp": "9" * 30, "X-Slack-Signature": "v0=00"}),
        (b"{}", {"X-Slack-Request-Timestamp": "-1", "X-Slack-Signature": "v0=\xe9"}),
        (b"\xff\xfe{", {"X-Slack-Request-Timestamp": str(int(time.time()))}),
    ],
)
async def test_unsigned_junk_is_refused_before_it_is_read(
    start: Start, caplog: pytest.LogCaptureFixture, body: bytes, headers: dict[str, str]
) -> None:
    h = await start()
    with caplog.at_level(logging.INFO):
        assert await post(h, body, {"Content-Type": "application/json", **headers}) == 401
    assert tracebacks(caplog) == []
    assert h.model.request_count == 0


@pytest.mark.parametrize(
    "body",
    ["null", "[1]", '"text"', "5", '{"type": 5}', '{"type": "event_callback", "event": 3}',
     '{"type": "event_callback", "event": {"type": 4}}',
     '{"type": "event_callback", "team_id": 7, "event": {"type": "message"}}',
     '{"type": "event_callback", "authorizations": [1], "event": {"type": "message"}}',
     '{"type": "url_verification", "challenge": 5}', '{"command": "/parley", "text": 5}',
     "[" * 100_000],
)  # fmt: skip
async def test_signed_bodies_of_the_wrong_shape_are_ignored_with_a_200(
    start: Start, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    h = await start()
    with caplog.at_level(logging.INFO):
        status, _ = await h.send.post(body, "application/json")
        await h.adapter.drain()
    assert status == 200
    assert tracebacks(caplog) == []
    ignored = [r for r in caplog.records if r.name == "adapters.slack" and "ignored" in r.msg]
    assert len(ignored) == 1


@pytest.mark.parametrize(
    "fields",
    [{"text": 5}, {"user": 7}, {"ts": 1.5}, {"ts": "yesterday"}, {"thread_ts": "1.5.6"},
     {"channel": ["C1"]}, {"subtype": {"a": 1}}, {"team": 3}],
)  # fmt: skip
async def test_signed_events_with_wrong_typed_fields_are_ignored(
    start: Start, caplog: pytest.LogCaptureFixture, fields: dict[str, Any]
) -> None:
    h = await start()
    h.model.script(Text("must not be said"))
    with caplog.at_level(logging.INFO):
        assert await h.event(mention() | fields) == 200
    assert tracebacks(caplog) == []
    assert h.model.request_count == 0
    assert not [call for call in h.slack.calls if call.method.startswith("chat.")]
    assert "Something went wrong" not in json.dumps([c.params for c in h.slack.calls])


async def test_a_slash_command_with_wrong_typed_fields_is_ignored(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start()
    body = json.dumps({"command": "/parley", "text": "help", "user_id": 5, "team_id": "T1"})
    with caplog.at_level(logging.INFO):
        status, _ = await h.send.post(body, "application/json")
        await h.adapter.drain()
    assert status == 200
    assert tracebacks(caplog) == []
    assert h.model.request_count == 0


async def test_after_all_that_a_mention_is_still_answered(start: Start) -> None:
    h = await start()
    for body in ("null", "[1]", '{"type": "event_callback", "event": 3}'):
        await h.send.post(body, "application/json")
    h.model.script(Text("still here"))
    assert await h.event(mention("are you there?")) == 200
    assert h.texts() == ["still here"]


@pytest.mark.parametrize(
    ("timestamp", "age", "valid"),
    [("1700000000", 0, True), ("1700000000", 299, True), ("1700000000", 301, False),
     ("1700000000", -301, False), ("17e8", 0, False), ("", 0, False), ("٣", 0, False)],
)  # fmt: skip
def test_signature_checks(timestamp: str, age: int, valid: bool) -> None:
    body = b'{"type": "event_callback"}'
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    now = 1700000000 + age
    assert signature_valid(SECRET, body, timestamp, signature, now) is valid
    assert not signature_valid(SECRET, body + b" ", timestamp, signature, now)
    assert not signature_valid("", body, timestamp, signature, now)
