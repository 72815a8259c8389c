"""Discord refusing or confusing Parley: every interaction gets an answer, a stored
answer survives a storm of 429s, and what cannot be delivered is logged and counted.

The real discord.py client against the fake Discord, as in test_discord_adapter.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.discord_delivery import Backoff
from bot.engine import Engine
from tests.discord_helpers import CHANNEL_KEY, Bot, BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, CHANNEL_ID
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here
CALLBACK = r"/interactions/\d+/{token}/callback"
QUICK = Backoff(retries=6, first_wait=0.01, max_wait=0.05)


def delivery_failures(engine: Engine) -> float:
    text = engine.metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "parley_delivery_failures_total":
                return float(sample.value)
    return 0.0


async def callback_of(bot: Bot, payload: Any) -> dict[str, Any]:
    pattern = CALLBACK.format(token=payload["token"])
    calls = await eventually(lambda: bot.fake.calls_to("POST", pattern))
    return dict(calls[0].body)


# -- every interaction gets an answer ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("frobnicate", {}, "Parley has no /frobnicate command"),
        ("ask", {}, "options Parley does not expect"),  # the required prompt is missing
        ("block", {}, "options Parley does not expect"),
        ("ask", {"prompt": 5}, "a value Parley cannot use"),  # Discord checks types; we too
        ("usage", {"period": 7}, "a value Parley cannot use"),
        ("block", {"user": "nobody"}, "a value Parley cannot use"),
    ],
)
async def test_an_interaction_discord_py_cannot_run_is_answered_privately(
    start_bot: BotFactory, name: str, options: dict[str, Any], expected: str
) -> None:
    bot = await start_bot()
    payload = await bot.fake.send_interaction(name, options=options)
    callback = await callback_of(bot, payload)
    assert callback["type"] == 4  # a message, not a deferral: nothing will follow
    assert callback["data"]["flags"] == 64  # ephemeral
    assert expected in callback["data"]["content"]
    assert bot.model.request_count == 0


# -- a storm of 429s --------------------------------------------------------------------


async def test_a_stored_answer_is_delivered_through_a_storm_of_429s(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    bot.adapter.backoff = QUICK
    # discord.py tries 5 times per request: this outlasts the placeholder, the streamed
    # text and the final answer's own attempt, and three retries more.
    bot.fake.fail("POST", r"/channels/\d+/messages", 429, retry_after=0.001, times=30)
    bot.model.script(Text("worth the wait"))
    message = await bot.mention("hello?")
    await bot.replies_to(message)
    assert await bot.final_text(contains="worth the wait") == "worth the wait"
    assert delivery_failures(bot.engine) == 0


async def test_an_answer_that_cannot_be_delivered_is_logged_and_counted(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    bot.adapter.backoff = QUICK
    bot.fake.fail("POST", r"/channels/\d+/messages", 429, retry_after=0.001, times=10_000)
    bot.model.script(Text("never shown"), Text("shown after all"))
    with caplog.at_level(logging.ERROR):
        await bot.mention("hello?")
        await eventually(lambda: delivery_failures(bot.engine) == 1)
    assert "could not deliver the stored answer" in caplog.text and "HTTP 429" in caplog.text
    stored = [m.content for m in (await bot.engine.store.recent(CHANNEL_KEY, 10)).messages]
    assert stored == ["hello?", "never shown"]
    bot.fake.faults.clear()  # the storm passes: Parley answers again
    await bot.replies_to(await bot.mention("and now?"))
    assert await bot.final_text(contains="shown after all")


async def test_a_refusal_that_retrying_cannot_cure_is_not_retried(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    bot.adapter.backoff = QUICK
    bot.fake.fail("POST", rf"/channels/{CHANNEL_ID}/messages", 403, code=50013, times=1000)
    bot.model.script(Text("forbidden"))
    await bot.mention("hello?")
    await eventually(lambda: delivery_failures(bot.engine) == 1)
    posts = bot.fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert len(posts) <= 3  # the status, the answer, and no retries


# -- a deferral that fails ----------------------------------------------------------------


async def test_an_ask_whose_deferral_failed_is_answered_in_the_channel(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    bot.fake.fail("POST", CALLBACK.format(token=r"[^/]+"), 404, code=10062)  # too late
    bot.model.script(Text("answered anyway"))
    await bot.fake.send_interaction("ask", options={"prompt": "are you there?"})
    text = await bot.final_text(contains="answered anyway")
    assert "Discord did not take the command in time" in text
    assert bot.model.requests[0]["messages"][-1]["content"] == "are you there?"
    assert not bot.fake.calls_to("PATCH", r"/webhooks/.*")


async def test_a_private_command_whose_deferral_failed_is_logged_and_counted(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    bot.fake.fail("POST", CALLBACK.format(token=r"[^/]+"), 404, code=10062)
    before = len(bot.fake.calls)
    with caplog.at_level(logging.ERROR):
        await bot.fake.send_interaction("usage", user_id=ADA_ID)
        await eventually(lambda: delivery_failures(bot.engine) == 1)
    assert "could not deliver /usage" in caplog.text
    # Never in the channel: its answer is for the admin alone.
    assert not bot.fake.calls_to("POST", r"/channels/\d+/messages")[before:]


async def test_an_interaction_acknowledged_already_is_left_alone(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.fake.fail("POST", CALLBACK.format(token=r"[^/]+"), 400, code=40060)
    payload = await bot.fake.send_interaction("ask", options={"prompt": "replayed"})
    await callback_of(bot, payload)
    bot.model.script(Text("barrier"))
    await bot.replies_to(await bot.mention("barrier"))
    await bot.final_text(contains="barrier")
    assert bot.model.request_count == 1  # the barrier only
    assert delivery_failures(bot.engine) == 0
    assert bot.fake.channel_contents(CHANNEL_ID) == ["barrier"]  # nothing for the replay
