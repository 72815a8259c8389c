"""Discord: /ask and the optional response cache, and /summary, through the real
discord.py client against the fake Discord and the fake model."""

from __future__ import annotations

from bot.summaries import NO_SUMMARY
from tests.discord_helpers import Bot, BotFactory, content, start_bot
from tests.fakes import eventually
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here


async def ask(bot: Bot, prompt: str) -> str:
    """Send /ask and wait for its answer's final edit."""
    fake = bot.fake
    interaction = await fake.send_interaction("ask", options={"prompt": prompt})
    token = interaction["token"]

    def final() -> str:
        edits = fake.calls_to("PATCH", rf"/webhooks/\d+/{token}/messages/@original")
        texts = [content(call) for call in edits]
        return texts[-1] if texts and "answer" in texts[-1] else ""

    return str(await eventually(final))


async def test_an_identical_ask_is_answered_from_the_store(start_bot: BotFactory) -> None:
    bot = await start_bot(response_cache_seconds=600.0, tools=())
    bot.model.script(Text("The deploy answer."), Text("The release answer."))
    assert "The deploy answer." in await ask(bot, "how do we deploy?")
    assert bot.model.request_count == 1

    again = await ask(bot, "how do we deploy?")
    assert "The deploy answer." in again
    assert bot.model.request_count == 1  # from the store, no model call
    everything = " ".join(content(c) for c in bot.fake.calls if isinstance(c.body, dict))
    assert "A cached answer" in everything

    assert "The release answer." in await ask(bot, "how do we release?")
    assert bot.model.request_count == 2  # a different question goes to the model
    rows = {row["key"]: row for row in await bot.engine.store.usage_report(0, "kind")}
    assert rows["cached"]["requests"] == 1 and rows["cached"]["total_tokens"] == 0


async def test_the_summary_slash_command_answers_privately(start_bot: BotFactory) -> None:
    bot = await start_bot()
    interaction = await bot.fake.send_interaction("summary")
    token = interaction["token"]
    edits = await eventually(lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{token}/.*"))
    assert content(edits[-1]) == NO_SUMMARY
    callback = bot.fake.calls_to("POST", rf"/interactions/\d+/{token}/callback")[0]
    assert callback.body == {"type": 5, "data": {"flags": 64}}  # ephemeral
