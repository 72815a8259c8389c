"""Per-user limits: boundaries, the rolling window, overrides, blocks, processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings
from bot.messages import ReplyKind
from bot.ratelimit import Limiter, describe_wait
from bot.store import UsageRecord, open_store
from bot.store.sqlite import SqliteStore
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI, Text


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("limit", [1, 3, 5])
async def test_n_requests_pass_and_the_next_is_refused(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, limit: int
) -> None:
    clock = Clock()
    engine = make_engine(clock=clock, requests_per_minute=limit)
    for _ in range(limit):
        assert final_text(await collect(engine, message("hi"))) == "echo: hi"
    refused = await collect(engine, message("one more"))
    assert refused[-1].kind is ReplyKind.ERROR
    assert f"limit of {limit} requests per minute" in final_text(refused)
    assert "Try again in 60 seconds" in final_text(refused)
    assert fake_openai.request_count == limit
    # The refused message was not stored and not sent anywhere.
    stored = [
        m.content for m in (await engine.store.recent(message("x").conversation, 50)).messages
    ]
    assert "one more" not in stored


async def test_the_window_rolls_over(make_engine: EngineFactory) -> None:
    clock = Clock()
    engine = make_engine(clock=clock, requests_per_minute=2)
    await collect(engine, message("a"))
    clock.now += 30
    await collect(engine, message("b"))
    clock.now += 29
    assert "Try again in 1 second" in final_text(await collect(engine, message("c")))
    clock.now += 1.5  # the first request is now older than a minute
    assert final_text(await collect(engine, message("d"))) == "echo: d"
    assert "per minute" in final_text(await collect(engine, message("e")))


async def test_limits_are_per_user(make_engine: EngineFactory) -> None:
    engine = make_engine(clock=Clock(), requests_per_minute=1)
    await collect(engine, message("a", user="ann"))
    assert final_text(await collect(engine, message("b", user="bob"))) == "echo: b"
    assert "per minute" in final_text(await collect(engine, message("c", user="ann")))
    # The same id on another platform is another user.
    assert (
        final_text(await collect(engine, message("d", user="ann", platform="other"))) == "echo: d"
    )


async def test_token_budget_uses_reported_usage(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(clock=Clock(), tokens_per_day=1000)
    fake_openai.script(Text("big", prompt_tokens=900, completion_tokens=99))
    await collect(engine, message("first"))  # 999 tokens used: still under
    fake_openai.script(Text("over", prompt_tokens=50, completion_tokens=50))
    assert final_text(await collect(engine, message("second"))) == "over"  # overshoots by one call
    refused = final_text(await collect(engine, message("third")))
    assert "You have used your 1000 tokens for today" in refused
    assert "00:00 UTC" in refused
    assert fake_openai.request_count == 2


async def test_token_budget_resets_the_next_utc_day(make_engine: EngineFactory) -> None:
    clock = Clock(1_800_000_000.0)  # 2027-01-15 08:00 UTC
    engine = make_engine(clock=clock, tokens_per_day=1)
    await collect(engine, message("a"))
    assert "tokens for today" in final_text(await collect(engine, message("b")))
    clock.now += 16 * 3600 + 1
    assert final_text(await collect(engine, message("c"))) == "echo: c"


async def test_cost_limit(make_engine: EngineFactory, fake_openai: FakeOpenAI) -> None:
    engine = make_engine(clock=Clock(), cost_per_day_usd=0.001)
    fake_openai.script(Text("pricey", prompt_tokens=10_000, completion_tokens=0))  # $0.0015
    await collect(engine, message("a"))
    assert "daily spending limit of $0.00" in final_text(await collect(engine, message("b")))


async def test_overrides_and_blocks(make_engine: EngineFactory) -> None:
    engine = make_engine(clock=Clock(), requests_per_minute=1)
    await engine.store.set_user_limit("test:alice", "requests_per_minute", 3)
    for text in ("a", "b", "c"):
        assert final_text(await collect(engine, message(text))) == f"echo: {text}"
    assert "limit of 3 requests" in final_text(await collect(engine, message("d")))
    await engine.store.set_user_limit("test:bob", "blocked", 1)
    blocked = await collect(engine, message("hello", user="bob"))
    assert "blocked" in final_text(blocked)
    assert blocked[-1].private


async def test_unlimited_override_beats_a_default(make_engine: EngineFactory) -> None:
    engine = make_engine(clock=Clock(), requests_per_minute=1)
    await engine.store.set_user_limit("test:alice", "requests_per_minute", 0)
    for text in ("a", "b", "c"):
        assert final_text(await collect(engine, message(text))) == f"echo: {text}"


@pytest.mark.parametrize(("exempt", "answered"), [(True, 3), (False, 1)])
async def test_admins_are_exempt_unless_configured(
    make_engine: EngineFactory, exempt: bool, answered: int
) -> None:
    engine = make_engine(
        clock=Clock(), requests_per_minute=1, admins=("test:alice",), admins_exempt=exempt
    )
    finals = [final_text(await collect(engine, message(t))) for t in ("a", "b", "c")]
    assert sum(text.startswith("echo") for text in finals) == answered


async def test_refusals_are_counted(make_engine: EngineFactory) -> None:
    engine = make_engine(clock=Clock(), requests_per_minute=1)
    for text in ("a", "b", "c"):
        await collect(engine, message(text))
    assert await engine.store.refusal_counts(0) == {"requests_per_minute": 2}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (600, "10 minutes"),
        (30000, "9 hours"),
    ],
)
def test_wait_is_described_in_words(seconds: float, text: str) -> None:
    assert describe_wait(seconds) == text


HAMMER = """
import asyncio, sys, time
from bot.config import Settings
from bot.ratelimit import Limiter
from bot.store import open_store
async def main():
    store = await open_store(sys.argv[1])
    limiter = Limiter(store, Settings(requests_per_minute=int(sys.argv[2]), tokens_per_day=0))
    start = float(sys.argv[3])
    while time.time() < start:
        await asyncio.sleep(0.001)
    admitted = 0
    for _ in range(400):
        admitted += await limiter.check("slack:U1", False, time.time()) is None
        await asyncio.sleep(0.0002)  # spaced, so every process gets turns at the lock
    await store.close()
    print(admitted)
asyncio.run(main())
"""


def test_processes_never_let_more_than_the_limit_through(store_url: str) -> None:
    processes = 3
    import asyncio
    import time

    async def refusals() -> dict[str, int]:
        store = await open_store(store_url)
        try:
            return await store.refusal_counts(0)
        finally:
            await store.close()

    asyncio.run(refusals())  # create the schema once, before the race
    start = str(time.time() + 3)
    hammers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, store_url, "300", start],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    admitted = [int(p.communicate(timeout=60)[0]) for p in hammers]
    assert sum(admitted) == 300
    assert all(count > 0 for count in admitted)  # all really competed
    assert asyncio.run(refusals()) == {"requests_per_minute": 400 * processes - 300}


async def test_limiter_alone_with_usage_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "l.db")
    limiter = Limiter(store, Settings(requests_per_minute=0, tokens_per_day=100))
    record = UsageRecord("s", "w", "c", "s:u", "m", 60, 40, 0, 0, None, 1.0, "ok", 1000.0)
    assert await limiter.check("s:u", False, 1000.0) is None
    await store.record_usage(record)
    refusal = await limiter.check("s:u", False, 1001.0)
    assert refusal is not None and refusal.kind == "tokens_per_day"


async def test_a_duplicate_delivery_uses_no_limit(make_engine: EngineFactory) -> None:
    engine = make_engine(clock=Clock(), requests_per_minute=2)
    await collect(engine, message("hi", dedupe_keys=("ev:1",)))
    assert await collect(engine, message("hi", dedupe_keys=("ev:1",))) == []
    assert final_text(await collect(engine, message("next", dedupe_keys=("ev:2",)))) == "echo: next"
    assert await engine.store.refusal_counts(0) == {}


async def test_a_limit_lowered_below_this_minutes_count_refuses_until_the_oldest_expires(
    store_url: str,
) -> None:
    store = await open_store(store_url)
    limiter = Limiter(store, Settings(requests_per_minute=0, tokens_per_day=0))
    for second in range(10):
        assert await limiter.check("s:u", False, 1000.0 + second) is None
    await store.set_user_limit("s:u", "requests_per_minute", 4)  # counting stops at 4 of 10
    refusal = await limiter.check("s:u", False, 1010.0)
    # Not when the oldest of ten expires (1060) but when only three remain (1066).
    assert refusal is not None and "Try again in 56 seconds" in refusal.text
    # At 1065 six have expired and four remain: still refused.
    assert await limiter.check("s:u", False, 1065.0) is not None
    assert await limiter.check("s:u", False, 1066.5) is None  # three remain: one more fits
    assert await limiter.check("s:u", False, 1066.6) is not None  # and that made four again
    await store.close()


async def test_admissions_of_users_who_went_quiet_are_pruned(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "l.db")
    limiter = Limiter(store, Settings(requests_per_minute=10, tokens_per_day=0))
    for user in ("s:a", "s:b"):
        await limiter.check(user, False, 1000.0)
    await limiter.check("s:c", False, 1050.0)
    await store.prune(1061.0)  # a's and b's go; c's is 11 seconds old
    assert store.db.execute("SELECT user_key FROM admissions").fetchall() == [("s:c",)]
    await store.close()
