"""Discord's commands: slash commands, admin rights, and commands typed in a mention.

Admin commands answer ephemerally and only to admins; Manage Server makes an admin only
in a server listed in platform_admin_workspaces. A command typed in a channel is
pointed to its slash command, whose answer nobody else sees.
"""

from __future__ import annotations

import datetime

import discord
import pytest

from bot.commands import BECOME_ADMIN
from tests.discord_helpers import TRUSTED_GUILD, Bot, BotFactory, content, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import (
    ADA_ID,
    ALICE_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_GUILD_ID,
)
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here


async def edited_answer(bot: Bot, token: str) -> str:
    """The text of an interaction's original response, once it has been edited."""
    edits = await eventually(lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{token}/.*"))
    return content(edits[-1])


async def test_ask_is_deferred_then_answered(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.model.script(Text("Paris is the capital of France."))
    interaction = await bot.fake.send_interaction("ask", options={"prompt": "capital of France?"})
    answer = "Paris is the capital of France."
    edits = bot.fake.calls_to
    final = await eventually(
        lambda: [c for c in edits("PATCH", r"/webhooks/.*/@original") if content(c) == answer]
    )
    callback = bot.fake.calls_to("POST", rf"/interactions/{interaction['id']}/.*/callback")
    assert callback[0].body == {"type": 5}  # deferred, thinking, public
    assert bot.fake.calls.index(callback[0]) < bot.fake.calls.index(final[0])
    assert bot.model.requests[0]["messages"][-1]["content"] == "capital of France?"
    # Discord shows "Parley is thinking…" for the deferral: no italic copy edited in.
    assert [content(c) for c in edits("PATCH", r"/webhooks/.*/@original")] == [answer]


@pytest.mark.parametrize(("user_id", "allowed"), [(ALICE_ID, False), (ADA_ID, True)])
async def test_admin_command_needs_manage_server(
    start_bot: BotFactory, user_id: int, allowed: bool
) -> None:
    bot = await start_bot(platform_admin_workspaces=TRUSTED_GUILD)
    bot.model.script(Text("some answer"))
    await bot.replies_to(await bot.mention("use some tokens"))  # usage to report
    await bot.final_text(contains="some answer")
    payload = await bot.fake.send_interaction(
        "usage", options={"period": "7d", "by": "user"}, user_id=user_id
    )
    token = payload["token"]
    edits = await eventually(lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{token}/.*"))
    callback = bot.fake.calls_to("POST", rf"/interactions/\d+/{token}/callback")[0]
    assert callback.body == {"type": 5, "data": {"flags": 64}}  # ephemeral
    text = content(edits[-1])
    if allowed:
        assert "Usage over the last 7d" in text and f"discord:{ALICE_ID}" in text
    else:  # a member sees their own usage only
        assert "Your usage over the last 7d" in text and "discord:" not in text
        assert str(ADA_ID) not in text and "TOTAL" not in text


@pytest.mark.parametrize(
    "trusted", [(), ("web:local",), (f"discord:{OTHER_GUILD_ID}",), (f"slack:{GUILD_ID}",)]
)
async def test_manage_server_in_an_untrusted_guild_is_not_admin(
    start_bot: BotFactory, trusted: tuple[str, ...]
) -> None:
    # Anyone can create a server and invite a public bot: Manage Server there must not
    # open /usage and /block over every platform Parley serves.
    bot = await start_bot(platform_admin_workspaces=trusted)
    for name, options in (("system", {}), ("limits", {"action": "show"})):
        payload = await bot.fake.send_interaction(name, options=options, user_id=ADA_ID)
        assert await edited_answer(bot, payload["token"]) == (
            f"⚠️ Sorry, only Parley admins can use /{name}." + BECOME_ADMIN
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("user_id", "allowed"), [(ALICE_ID, False), (ADA_ID, True)])
async def test_usage_chart_is_an_ephemeral_png_for_admins_only(
    start_bot: BotFactory, user_id: int, allowed: bool
) -> None:
    bot = await start_bot(platform_admin_workspaces=TRUSTED_GUILD)
    bot.model.script(Text("some answer"))
    await bot.replies_to(await bot.mention("use some tokens"))  # a chart needs usage
    await bot.final_text(contains="some answer")
    payload = await bot.fake.send_interaction(
        "usage", options={"period": "30d", "chart": True}, user_id=user_id
    )
    token = payload["token"]
    edit = await eventually(lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{token}/.*"))
    callback = bot.fake.calls_to("POST", rf"/interactions/\d+/{token}/callback")[0]
    assert callback.body == {"type": 5, "data": {"flags": 64}}  # ephemeral
    if not allowed:
        assert "only Parley admins" in content(edit[-1])
        await eventually(lambda: not bot.adapter.in_flight.tasks)  # the answer is complete
        assert not [call for call in bot.fake.calls if call.files]
        assert not bot.fake.calls_to("POST", rf"/webhooks/\d+/{token}")
        return
    assert content(edit[-1]) == "Usage chart, last 30d"  # "/usage chart 30d" was routed
    [followup] = await eventually(lambda: bot.fake.calls_to("POST", rf"/webhooks/\d+/{token}"))
    assert followup.body["flags"] == 64
    assert followup.body["allowed_mentions"] == {"parse": []}
    [upload] = followup.files
    assert upload.filename == "usage.png" and upload.data.startswith(PNG_SIGNATURE)
    [message] = [m for m in bot.fake.messages.values() if m["attachments"]]
    assert message["flags"] == 64
    [(attachment, data)] = bot.fake.attachments_in(int(message["id"]))
    assert attachment["filename"] == "usage.png" and data == upload.data


async def test_usage_chart_typed_in_a_dm_is_attached_there(start_bot: BotFactory) -> None:
    bot = await start_bot(admins=(f"discord:{ADA_ID}",))
    bot.model.script(Text("some answer"))
    await bot.fake.send_message("hello", channel_id=DM_CHANNEL_ID, guild_id=None, author=ADA_ID)
    await bot.final_text(DM_CHANNEL_ID, contains="some answer")
    await bot.fake.send_message(
        "/usage chart", channel_id=DM_CHANNEL_ID, guild_id=None, author=ADA_ID
    )
    posted = rf"/channels/{DM_CHANNEL_ID}/messages"
    [upload] = await eventually(lambda: [c for c in bot.fake.calls_to("POST", posted) if c.files])
    assert upload.files[0].data.startswith(PNG_SIGNATURE)
    assert upload.body["allowed_mentions"] == {"parse": []}
    assert "Usage chart, last 7d" in bot.fake.channel_contents(DM_CHANNEL_ID)


async def test_private_refusal_of_a_public_ask_is_ephemeral(start_bot: BotFactory) -> None:
    bot = await start_bot()
    await bot.engine.store.set_user_limit(f"discord:{ALICE_ID}", "blocked", 1)
    payload = await bot.fake.send_interaction("ask", options={"prompt": "hello?"})
    token = payload["token"]
    followup = await eventually(lambda: bot.fake.calls_to("POST", rf"/webhooks/\d+/{token}"))
    assert bot.fake.calls_to("DELETE", rf"/webhooks/\d+/{token}/messages/@original")
    assert followup[0].body["flags"] == 64 and "blocked" in content(followup[0])
    assert bot.model.request_count == 0


async def test_answers_past_the_token_lifetime_go_to_the_channel(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    later = discord.utils.utcnow() + datetime.timedelta(minutes=15)
    bot.adapter.clock = lambda: later
    bot.model.script(Text("a late answer"))
    await bot.fake.send_interaction("ask", options={"prompt": "slow question"})
    assert await bot.final_text(contains="a late answer")
    assert not bot.fake.calls_to("PATCH", r"/webhooks/.*")

    # A private answer never falls back to the channel, where everyone would see it.
    before = len(bot.fake.calls_to("POST", r"/channels/\d+/messages"))
    await bot.fake.send_interaction("usage", user_id=ADA_ID)
    await eventually(lambda: "outlived its interaction token" in caplog.text)
    posted = bot.fake.calls_to("POST", r"/channels/\d+/messages")
    assert len(posted) == before


# -- commands typed in a mention ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [("/usage 7d", "usage"), ("usage 7d", "usage"), ("Reset", "reset"), ("", "help")],
)
async def test_typed_command_in_a_channel_points_to_the_slash_command(
    start_bot: BotFactory, text: str, command: str
) -> None:
    bot = await start_bot()
    reply = (await bot.replies_to(await bot.mention(text)))[0]
    assert f"slash command /{command}" in content(reply)
    assert bot.model.request_count == 0


@pytest.mark.parametrize("text", ["model this as a state machine", "reset my password how?"])
async def test_a_question_starting_with_a_command_word_goes_to_the_model(
    start_bot: BotFactory, text: str
) -> None:
    bot = await start_bot()
    bot.model.script(Text("Here is how."))
    await bot.replies_to(await bot.mention(text))
    assert await bot.final_text(contains="Here is how.")
    assert bot.model.requests[0]["messages"][-1]["content"] == text


async def test_a_command_mentioned_in_a_dm_runs_there(start_bot: BotFactory) -> None:
    bot = await start_bot()
    await bot.mention("help", channel_id=DM_CHANNEL_ID, guild_id=None)
    assert "Parley commands:" in await bot.final_text(DM_CHANNEL_ID, contains="/reset")
    assert bot.model.request_count == 0
