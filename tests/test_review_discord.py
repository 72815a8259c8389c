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
