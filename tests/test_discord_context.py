"""Discord reply chains and access lists, through the real discord.py client against the
fake Discord and model."""

from __future__ import annotations

from tests.discord_helpers import BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, ALICE_ID, BOT_ID, GUILD_ID, MANAGER_ROLE_ID
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here


def _user_turns(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages if m["role"] == "user"]


async def test_a_mention_replying_to_a_message_carries_its_chain(start_bot: BotFactory) -> None:
    bot = await start_bot()
    first = await bot.fake.send_message("The deploy is at 5pm.", author=ADA_ID)
    second = await bot.fake.send_message(
        "Can we move it to 6?", author=ALICE_ID, reply_to=first, referenced=False
    )
    bot.model.script(Text("They asked to move it to 6pm."))
    question = await bot.mention("what was asked here?", reply_to=second)
    await bot.final_text(contains="6pm")
    prompt = _user_turns(bot.model.requests[0])[-1]
    assert prompt.splitlines() == [
        "[The message below replies to these earlier messages, oldest first]",
        "ada: The deploy is at 5pm.",
        "alice: Can we move it to 6?",
        "[The message]",
        "what was asked here?",
    ]
    # The gateway sent `second` along; `first` was fetched, once.
    fetched = bot.fake.calls_to("GET", r"/channels/\d+/messages/\d+")
    assert [call.path.rsplit("/", 1)[1] for call in fetched] == [first["id"]]
    question = await bot.mention("and who said it?", reply_to=second)
    await bot.replies_to(question)
    assert len(bot.fake.calls_to("GET", r"/channels/\d+/messages/\d+")) == 1  # cached


async def test_reply_chain_depth_bounds_the_chain(start_bot: BotFactory) -> None:
    bot = await start_bot(discord_reply_chain_depth=1)
    first = await bot.fake.send_message("one", author=ADA_ID)
    second = await bot.fake.send_message("two", author=ADA_ID, reply_to=first)
    question = await bot.mention("summary?", reply_to=second)
    await bot.replies_to(question)
    await eventually(lambda: bot.model.request_count == 1)
    assert "one" not in _user_turns(bot.model.requests[0])[-1].splitlines()
    assert "ada: two" in _user_turns(bot.model.requests[0])[-1].splitlines()


async def test_replying_to_parleys_answer_continues_without_a_mention(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    bot.model.script(Text("Paris."), Text("About two million."))
    question = await bot.mention("capital of France?")
    await bot.replies_to(question)
    await bot.final_text(contains="Paris.")
    answer = next(
        m for m in bot.fake.messages.values()
        if str(m.get("message_reference", {}).get("message_id")) == question["id"]
    )  # fmt: skip
    follow_up = await bot.fake.send_message("and its population?", reply_to=answer)
    await bot.final_text(contains="two million")
    turns = _user_turns(bot.model.requests[1])
    assert turns[0] == "capital of France?"
    assert turns[-1].endswith("and its population?")
    # A reply to someone else's message, without a mention, is not for Parley.
    await bot.fake.send_message("unrelated", reply_to=follow_up)
    await bot.mention("last one")
    await eventually(lambda: bot.model.request_count == 3)
    assert "unrelated" not in str(bot.model.requests[-1])


async def test_blocked_role_gets_no_model_call(start_bot: BotFactory) -> None:
    bot = await start_bot(access_block_roles=(f"discord:{GUILD_ID}:{MANAGER_ROLE_ID}",))
    refused = await bot.mention("hello", author=ADA_ID)  # ada has the Managers role
    calls = await bot.replies_to(refused)
    assert "not available to you" in str(calls[0].body["content"])
    await bot.mention("hello", author=ALICE_ID)
    await bot.final_text(contains="echo: hello")
    assert bot.model.request_count == 1


async def test_channel_outside_the_allow_list_gets_no_model_call(start_bot: BotFactory) -> None:
    bot = await start_bot(access_allow_channels=(f"discord:{GUILD_ID}:1",))
    refused = await bot.mention("hello")
    calls = await bot.replies_to(refused)
    assert "do not answer in this channel" in str(calls[0].body["content"])
    assert bot.model.request_count == 0
    assert BOT_ID  # the bot itself is never refused: it never asks
