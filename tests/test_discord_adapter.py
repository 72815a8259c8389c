"""The Discord adapter: the real discord.py client against a fake Discord and a fake model.

Everything goes over real sockets: discord.py logs in over REST, identifies on the
gateway websocket, receives dispatches the test pushes, and answers through REST calls
the fake records. No sleeps: tests poll the fakes' records with `eventually`. Commands
are tested in test_discord_commands.py; the shared fixture is in discord_helpers.py.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
import pytest

from adapters import discord_config
from adapters.common import split_message
from bot.config import ConfigError
from bot.messages import ConversationKey
from tests.discord_helpers import CHANNEL_KEY, TOKEN, BotFactory, content, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import (
    ALICE_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_GUILD_ID,
    thread_channel,
)
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import Call, Status, Text, ToolCalls

__all__ = ["start_bot"]  # the fixture, for pytest to find here
MESSAGE_CALLS = r"/channels/\d+/messages(/\d+)?|/webhooks/\d+/[^/]+(/messages/.+)?"


# -- start-up -------------------------------------------------------------------------


async def test_login_syncs_commands_to_each_guild_once(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeDiscord(guild_ids=(GUILD_ID, OTHER_GUILD_ID))
    bot = await start_bot(guild_ids=f"{GUILD_ID}, {OTHER_GUILD_ID}", fake=fake)
    assert fake.calls_to("GET", "/users/@me") and fake.calls_to("GET", "/oauth2/applications/@me")
    synced = fake.calls_to("PUT", r"/applications/\d+/guilds/(\d+)/commands")
    assert sorted(call.path.split("/")[4] for call in synced) == sorted(
        [str(GUILD_ID), str(OTHER_GUILD_ID)]
    )
    assert not fake.calls_to("PUT", r"/applications/\d+/commands")
    names = {command["name"] for command in synced[0].body}
    assert {"ask", "chat", "reset", "usage", "limits", "system", "model"} <= names
    identify = fake.received_ops(2)[0]["d"]
    assert identify["intents"] & discord.Intents(message_content=True).value
    assert TOKEN not in caplog.text
    invite = next(r.getMessage() for r in caplog.records if "Invite Parley" in r.getMessage())
    assert "scope=bot+applications.commands" in invite
    assert f"permissions={discord_config.INVITE_PERMISSIONS.value}" in invite

    # A reconnect (and its ready/resume) never syncs again.
    await fake.request_reconnect()
    await eventually(lambda: fake.received_ops(6))
    await eventually(bot.adapter.connected)
    assert len(fake.calls_to("PUT", r"/applications/.*")) == 2


async def test_without_guild_ids_commands_sync_globally(start_bot: BotFactory) -> None:
    bot = await start_bot(guild_ids=None)
    assert len(bot.fake.calls_to("PUT", r"/applications/\d+/commands")) == 1
    assert not bot.fake.calls_to("PUT", r"/applications/\d+/guilds/\d+/commands")


async def test_sharded_client_stays_on_the_configured_gateway(start_bot: BotFactory) -> None:
    bot = await start_bot(discord_sharded=True)
    assert isinstance(bot.adapter.client, discord.AutoShardedClient)
    assert bot.fake.calls_to("GET", "/gateway/bot")  # for the shard count only
    assert bot.fake.received_ops(2)[0]["d"]["shard"] == [0, 1]
    bot.model.script(Text("sharded hello"))
    await bot.replies_to(await bot.mention("hi"))
    assert await bot.final_text(contains="sharded hello")


@pytest.mark.parametrize(("shard_ids", "syncs"), [((1,), False), ((0,), True)])
async def test_a_replica_runs_its_own_shards_of_a_split_gateway(
    start_bot: BotFactory, shard_ids: tuple[int, ...], syncs: bool
) -> None:
    bot = await start_bot(guild_ids=None, discord_shard_count=3, discord_shard_ids=shard_ids)
    assert isinstance(bot.adapter.client, discord.AutoShardedClient)
    identified = [frame["d"]["shard"] for frame in bot.fake.received_ops(2)]
    assert identified[0] in [[shard, 3] for shard in shard_ids]
    assert not bot.fake.calls_to("GET", "/gateway/bot")  # the count is given, not asked
    # Only the replica with shard 0 registers the slash commands.
    assert bool(bot.fake.calls_to("PUT", r"/applications/\d+/commands")) is syncs


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"PARLEY_DISCORD_SHARD_IDS": "0"}, "needs discord.shard_count"),
        ({"PARLEY_DISCORD_SHARD_IDS": "0,2", "PARLEY_DISCORD_SHARD_COUNT": "2"}, "below"),
        ({"PARLEY_DISCORD_SHARD_IDS": "0,0", "PARLEY_DISCORD_SHARD_COUNT": "2"}, "distinct"),
    ],
)
def test_wrong_shard_settings_are_one_clear_line(environ: dict[str, str], problem: str) -> None:
    from bot.config import load_settings

    with pytest.raises(ConfigError, match=problem):
        load_settings("config/parley.toml", environ=environ)


def test_endpoints_come_from_the_environment() -> None:
    pinned = discord_config.configure_endpoints(
        {"PARLEY_DISCORD_API_URL": "https://proxy.test/api/", "PARLEY_DISCORD_GATEWAY_URL":
         "wss://gw.proxy.test/?v=10&encoding=json"}
    )  # fmt: skip
    assert discord.http.Route.BASE == "https://proxy.test/api/v10"
    assert str(pinned) == "wss://gw.proxy.test/"
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == pinned
    assert discord_config.configure_endpoints({}) is None
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"


@pytest.mark.parametrize(
    ("value", "expected"), [("", []), ("1, 2,", [1, 2]), ("42", [42])]
)  # fmt: skip
def test_guild_ids(value: str, expected: list[int]) -> None:
    assert discord_config.guild_ids(value) == expected


def test_bad_guild_ids_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DISCORD_GUILD_IDS"):
        discord_config.guild_ids("general")


# -- mentions, threads, DMs -----------------------------------------------------------


async def test_mention_gets_a_reply_with_the_model_text(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.model.script(Text("Hello, alice!"))
    message = await bot.mention("say hello")
    reply = (await bot.replies_to(message))[0]
    assert str(reply.body["message_reference"]["message_id"]) == message["id"]
    assert await bot.final_text(contains="Hello, alice!") == "Hello, alice!"
    assert bot.model.requests[0]["messages"][-1] == {"role": "user", "content": "say hello"}


async def test_only_mentions_dms_and_own_threads_are_answered(start_bot: BotFactory) -> None:
    bot = await start_bot()
    await bot.fake.send_message("chatting among humans")
    await bot.fake.send_message(f"<@{BOT_ID}> from myself", author=BOT_ID, mentions=[BOT_ID])
    # In a thread people opened, a mention is answered but the rest is not for Parley.
    thread_id = bot.fake.new_id()
    human_thread = thread_channel(thread_id, CHANNEL_ID, GUILD_ID, "humans", owner_id=ALICE_ID)
    await bot.fake.dispatch("THREAD_CREATE", human_thread)
    bot.model.script(Text("answer in their thread"), Text("barrier answer"))
    await bot.mention("join us", channel_id=thread_id)
    await bot.final_text(thread_id, contains="answer in their thread")
    await bot.fake.send_message("thanks, we carry on alone", channel_id=thread_id)
    await bot.mention("barrier")
    await bot.final_text(contains="barrier answer")
    assert bot.model.request_count == 2  # the mentions only


async def test_dm_is_one_conversation_per_user(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.model.script(Text("Hi in private."), Text("Still private."))
    await bot.fake.send_message("hello", channel_id=DM_CHANNEL_ID, guild_id=None)
    assert await bot.final_text(DM_CHANNEL_ID, contains="Hi in private.")
    await bot.fake.send_message("again", channel_id=DM_CHANNEL_ID, guild_id=None)
    await bot.final_text(DM_CHANNEL_ID, contains="Still private.")
    history = [m["content"] for m in bot.model.requests[1]["messages"]]
    assert history[-3:] == ["hello", "Hi in private.", "again"]
    posted = bot.fake.calls_to("POST", rf"/channels/{DM_CHANNEL_ID}/messages")
    assert all("message_reference" not in call.body for call in posted)


@pytest.mark.parametrize("thread_cached", [True, False])
async def test_chat_thread_continues_without_mention(
    start_bot: BotFactory, thread_cached: bool
) -> None:
    bot = await start_bot(fake=FakeDiscord(thread_create_events=thread_cached))
    bot.model.script(Text("Let us start with Lisbon."), Text("Rome works too."))
    await bot.fake.send_interaction("chat", options={"prompt": "Plan a trip"})
    opened = await eventually(
        lambda: bot.fake.calls_to("POST", r"/channels/\d+/messages/\d+/threads")
    )
    thread_id = int(opened[0].path.split("/")[4])
    assert opened[0].body["name"] == "Plan a trip"
    assert await bot.final_text(thread_id, contains="Lisbon")

    await bot.fake.send_message("what about Rome?", channel_id=thread_id)
    assert await bot.final_text(thread_id, contains="Rome works too.")
    history = [m["content"] for m in bot.model.requests[1]["messages"]]
    assert history[-3:] == ["Plan a trip", "Let us start with Lisbon.", "what about Rome?"]
    key = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID), str(thread_id))
    assert await bot.engine.knows_conversation(key)
    assert bool(bot.fake.calls_to("GET", rf"/channels/{thread_id}")) is not thread_cached


async def test_a_private_thread_is_a_channel_of_its_own(start_bot: BotFactory) -> None:
    bot = await start_bot()
    thread_id = await bot.fake.open_thread("secrets", private=True)
    bot.model.script(Text("noted"))
    await bot.mention("the launch code is swordfish", channel_id=thread_id)
    await bot.final_text(thread_id, contains="noted")
    own = ConversationKey("discord", str(GUILD_ID), str(thread_id), "")
    assert await bot.engine.knows_conversation(own)
    parent = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID), str(thread_id))
    assert not await bot.engine.knows_conversation(parent)


@pytest.mark.parametrize(("private", "found"), [(True, False), (False, True)])
async def test_channel_search_never_reaches_into_a_private_thread(
    start_bot: BotFactory, private: bool, found: bool
) -> None:
    # search_history searches a channel with all its threads: someone in the parent
    # channel must not read a private thread through it (a public one is fair game).
    bot = await start_bot()
    thread_id = await bot.fake.open_thread("plans", private=private)
    search = Call("search_history", {"query": "swordfish"})
    bot.model.script(Text("noted"), ToolCalls([search]), Text("searched"))
    await bot.mention("the launch code is swordfish", channel_id=thread_id)
    await bot.final_text(thread_id, contains="noted")
    await bot.mention("what is the launch code?")
    await bot.final_text(contains="searched")
    asked, answered = bot.model.requests[1], bot.model.requests[2]
    assert all("swordfish" not in str(m.get("content")) for m in asked["messages"])
    [result] = [m for m in answered["messages"] if m["role"] == "tool"]
    assert ("launch code is swordfish" in result["content"]) is found


# -- what the answers look like ---------------------------------------------------------


async def test_long_answer_is_split_with_code_fences_intact(start_bot: BotFactory) -> None:
    bot = await start_bot()
    code = "\n".join(f"    print('line {i}')" for i in range(150))
    text = "Here is the script:\n\n```python\n" + code + "\n```\n\nThat is all."
    bot.model.script(Text(text))
    await bot.replies_to(await bot.mention("write a long script"))
    await bot.final_text(contains="That is all.")
    contents = bot.fake.channel_contents(CHANNEL_ID)[-len(split_message(text, 2000)) :]
    assert contents == split_message(text, 2000) and len(contents) >= 2
    for part in contents:
        assert len(part) <= 2000 and part.count("```") % 2 == 0
    assert contents[1].startswith("```python")


async def test_model_output_never_pings(start_bot: BotFactory) -> None:
    bot = await start_bot()
    loud = f"@everyone and @here, ping <@{ALICE_ID}> and <@&{GUILD_ID}>"
    bot.model.script(Text(loud), Text(loud))
    await bot.replies_to(await bot.mention("be loud"))
    await bot.fake.send_interaction("ask", options={"prompt": "be loud again"})
    await eventually(lambda: bot.model.request_count == 2)
    await eventually(
        lambda: any("ping" in content(c) for c in bot.fake.calls_to("PATCH", r"/webhooks/.*"))
    )
    sent = [c for c in bot.fake.calls if c.method in ("POST", "PATCH")]
    sent = [c for c in sent if re.fullmatch(MESSAGE_CALLS, c.path) and "content" in c.body]
    assert len(sent) >= 3  # the mention's placeholder and its answer, the /ask answer
    for call in sent:
        assert call.body["allowed_mentions"] == {"parse": []}, call
        assert "@everyone" not in content(call) and "@here" not in content(call)


async def test_model_failure_gives_a_short_error(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.model.script(Status(500), Status(500), Status(500))
    await bot.replies_to(await bot.mention("fail please"))
    text = await bot.final_text(contains="⚠️")
    assert len(text) < 300 and "Traceback" not in text
    assert bot.model.request_count == 3


async def test_streaming_edits_are_throttled(start_bot: BotFactory) -> None:
    bot = await start_bot()
    words = " ".join(f"word{i}" for i in range(60))
    bot.model.script(Text(words, chunks=60))
    first = (await bot.replies_to(await bot.mention("stream")))[0]
    assert content(first) == "*thinking…*"
    await bot.final_text(contains="word59")
    edits = bot.fake.calls_to("PATCH", r"/channels/\d+/messages/\d+")
    assert 1 <= len(edits) <= 3  # 60 deltas, one edit per interval at most
    assert content(edits[-1]) == words


# -- failures -------------------------------------------------------------------------


async def stored_count(bot: Any, count: int) -> bool:
    return len((await bot.engine.store.recent(CHANNEL_KEY, 10)).messages) == count


async def test_failed_send_is_logged_and_the_conversation_kept(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    bot.fake.fail("POST", rf"/channels/{CHANNEL_ID}/messages", 403, code=50013, times=10)
    bot.model.script(Text("You will never see this."))
    await bot.mention("hello?")
    await eventually(lambda: stored_count(bot, 2))
    stored = (await bot.engine.store.recent(CHANNEL_KEY, 10)).messages
    assert [m.content for m in stored] == ["hello?", "You will never see this."]
    await eventually(lambda: "HTTP 403 (code 50013)" in caplog.text)
    assert f"channel {CHANNEL_ID}" in caplog.text and TOKEN not in caplog.text


async def test_rate_limits_are_retried_or_logged(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    # A short 429 on the edit: discord.py waits and retries by itself.
    bot.fake.fail("PATCH", r"/channels/\d+/messages/\d+", 429, retry_after=0.05, times=1)
    bot.model.script(Text("after a short wait"), Text("dropped answer"))
    await bot.replies_to(await bot.mention("one"))
    assert await bot.final_text(contains="after a short wait")
    # A long one raises RateLimited: logged, and the conversation is stored anyway.
    bot.fake.fail("POST", r"/channels/\d+/messages", 429, retry_after=120, times=10)
    await bot.mention("two")
    await eventually(lambda: "rate limited for 120.0s" in caplog.text)
    await eventually(lambda: stored_count(bot, 4))
    stored = [m.content for m in (await bot.engine.store.recent(CHANNEL_KEY, 10)).messages]
    assert stored[-1] == "dropped answer"


async def test_replays_after_a_resume_are_not_answered_twice(start_bot: BotFactory) -> None:
    # Discord names its own host for resuming; through a proxy we must resume there too.
    fake = FakeDiscord(resume_gateway_url="ws://127.0.0.1:9/")
    bot = await start_bot(fake=fake)
    bot.model.script(Text("first answer"), Text("second answer"))
    message = await bot.mention("first")
    await bot.replies_to(message)
    await bot.final_text(contains="first answer")
    interaction = await fake.send_interaction("ask", options={"prompt": "q"})
    await eventually(lambda: bot.model.request_count == 2)

    await fake.request_reconnect(
        replay=[("MESSAGE_CREATE", message), ("INTERACTION_CREATE", dict(interaction))]
    )
    await eventually(lambda: fake.received_ops(6))  # RESUME reached the configured gateway
    bot.model.script(Text("barrier answer"))
    await bot.mention("barrier")
    await bot.final_text(contains="barrier answer")
    assert len(await bot.replies_to(message)) == 1
    assert bot.model.request_count == 3
