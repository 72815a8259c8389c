"""Review of issue #14 on Discord: a reply chain never brings another channel's message."""

from __future__ import annotations

from tests.discord_helpers import BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, CHANNEL_ID
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here


def _last_user_turn(request: dict[str, object]) -> str:
    messages = request["messages"]
    assert isinstance(messages, list)
    return str([m["content"] for m in messages if m["role"] == "user"][-1])


async def test_a_reference_naming_a_private_threads_message_quotes_nothing(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    thread = await bot.fake.open_thread("plans", private=True)
    secret = await bot.fake.send_message("The code is 4471.", author=ADA_ID, channel_id=thread)
    bot.model.script(Text("A code."), Text("I see no earlier message."))
    await bot.mention("what is this?", reply_to=secret, channel_id=thread)
    await eventually(lambda: bot.model.request_count == 1)
    assert "4471" in _last_user_turn(bot.model.requests[0])  # quoted where it was said
    # A reference that names that message but this channel (forged, or a fake's
    # mistake): the message is not this channel's, so nothing is quoted.
    forged = {**secret, "channel_id": str(CHANNEL_ID)}
    await bot.mention("what did it say?", reply_to=forged, referenced=False)
    await eventually(lambda: bot.model.request_count == 2)
    assert "4471" not in _last_user_turn(bot.model.requests[1])


async def test_a_deleted_message_is_no_longer_quoted_from_the_cache(start_bot: BotFactory) -> None:
    bot = await start_bot()
    oops = await bot.fake.send_message("My token is tok-9931, oops.", author=ADA_ID)
    bot.model.script(Text("A token."), Text("Nothing to see."))
    await bot.mention("what is this?", reply_to=oops, referenced=False)
    await eventually(lambda: bot.model.request_count == 1)
    assert "tok-9931" in _last_user_turn(bot.model.requests[0])
    del bot.fake.said[int(oops["id"])]  # deleted: Discord answers 404 for it now
    deleted = {"id": oops["id"], "channel_id": oops["channel_id"], "guild_id": oops["guild_id"]}
    await bot.fake.dispatch("MESSAGE_DELETE", deleted)
    await bot.mention("and now?", reply_to=oops, referenced=False)
    await eventually(lambda: bot.model.request_count == 2)
    assert "tok-9931" not in _last_user_turn(bot.model.requests[1])


async def test_an_edited_message_is_quoted_as_it_reads_now(start_bot: BotFactory) -> None:
    bot = await start_bot()
    oops = await bot.fake.send_message("My token is tok-9931, oops.", author=ADA_ID)
    bot.model.script(Text("A token."), Text("Redacted."))
    await bot.mention("what is this?", reply_to=oops, referenced=False)
    await eventually(lambda: bot.model.request_count == 1)
    edited = oops.copy()
    edited["content"] = "(redacted)"
    bot.fake.said[int(oops["id"])] = edited
    await bot.fake.dispatch("MESSAGE_UPDATE", edited)
    await bot.mention("and now?", reply_to=oops, referenced=False)
    await eventually(lambda: bot.model.request_count == 2)
    now = _last_user_turn(bot.model.requests[1])
    assert "tok-9931" not in now and "(redacted)" in now
