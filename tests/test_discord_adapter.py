"""The Discord adapter: the real discord.py client against a fake Discord and a fake model.

Everything goes over real sockets: discord.py logs in over REST, identifies on the
gateway websocket, receives dispatches the test pushes, and answers through REST calls
the fake records. No sleeps: tests poll the fakes' records with `eventually`.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import discord
import pytest

import adapters.discord as discord_adapter
from adapters import discord_config
from adapters.common import split_message
from adapters.discord_reply import STREAMING_MARK
from bot.config import ConfigError
from bot.engine import Engine
from bot.messages import ConversationKey
from tests.conftest import EngineFactory
from tests.fakes.discord_payloads import (
    ADA_ID,
    ALICE_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    OTHER_GUILD_ID,
    thread_channel,
)
from tests.fakes.discord_server import FakeDiscord, RestCall, eventually
from tests.fakes.openai_server import FakeOpenAI, Status, Text

TOKEN = "test-bot-token-never-logged"
CHANNEL_KEY = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID))
MESSAGE_CALLS = r"/channels/\d+/messages(/\d+)?|/webhooks/\d+/[^/]+(/messages/.+)?"


@dataclass
class Bot:
    fake: FakeDiscord
    model: FakeOpenAI
    adapter: discord_adapter.DiscordAdapter
    engine: Engine

    async def mention(self, text: str, **options: Any) -> dict[str, Any]:
        payload = await self.fake.send_message(f"<@{BOT_ID}> {text}", mentions=[BOT_ID], **options)
        return dict(payload)

    async def replies_to(self, message: dict[str, Any]) -> list[RestCall]:
        """Wait for the bot's reply to a message; return the calls made for it."""

        def posted() -> list[RestCall]:
            return [
                call
                for call in self.fake.calls_to("POST", r"/channels/\d+/messages")
                if str((call.body.get("message_reference") or {}).get("message_id"))
                == message["id"]
            ]

        return list(await eventually(posted))

    def model_answered(self, count: int) -> Callable[[], bool]:
        return lambda: self.model.request_count >= count

    async def final_text(self, channel_id: int = CHANNEL_ID, *, contains: str = "") -> str:
        """The newest message in a channel, once it contains `contains` and is no longer
        a streaming preview (which ends with the streaming mark)."""

        def newest() -> str:
            contents = self.fake.channel_contents(channel_id)
            last = contents[-1] if contents else ""
            done = contains in last and not last.endswith(STREAMING_MARK)
            return last if done else ""

        return str(await eventually(newest))


BotFactory = Callable[..., Awaitable[Bot]]


@pytest.fixture
async def start_bot(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BotFactory]:
    started: list[Bot] = []

    async def start(
        *,
        guild_ids: str | None = str(GUILD_ID),
        fake: FakeDiscord | None = None,
        **settings: Any,
    ) -> Bot:
        fake = fake or FakeDiscord()
        await fake.start()
        monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("PARLEY_DISCORD_API_URL", fake.api_url)
        monkeypatch.setenv("PARLEY_DISCORD_GATEWAY_URL", fake.gateway_url + "?v=10&encoding=json")
        if guild_ids is None:
            monkeypatch.delenv("DISCORD_GUILD_IDS", raising=False)
        else:
            monkeypatch.setenv("DISCORD_GUILD_IDS", guild_ids)
        engine = make_engine(**settings)
        adapter = discord_adapter.create(engine, engine.settings)
        bot = Bot(fake, fake_openai, adapter, engine)
        started.append(bot)
        await adapter.start()
        await eventually(lambda: adapter.connected() and _guilds_ready(adapter, fake))
        return bot

    yield start
    for bot in started:
        await bot.adapter.stop()
        await bot.fake.stop()


def _guilds_ready(adapter: discord_adapter.DiscordAdapter, fake: FakeDiscord) -> bool:
    client = adapter.client
    return client is not None and all(client.get_guild(g) for g in fake.guild_ids)


def _content(call: RestCall) -> str:
    return str((call.body or {}).get("content") or "")


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


# -- slash commands ---------------------------------------------------------------------


async def test_ask_is_deferred_then_answered(start_bot: BotFactory) -> None:
    bot = await start_bot()
    bot.model.script(Text("Paris is the capital of France."))
    interaction = await bot.fake.send_interaction("ask", options={"prompt": "capital of France?"})
    answer = "Paris is the capital of France."
    edits = bot.fake.calls_to
    final = await eventually(
        lambda: [c for c in edits("PATCH", r"/webhooks/.*/@original") if _content(c) == answer]
    )
    callback = bot.fake.calls_to("POST", rf"/interactions/{interaction['id']}/.*/callback")
    assert callback[0].body == {"type": 5}  # deferred, thinking, public
    assert bot.fake.calls.index(callback[0]) < bot.fake.calls.index(final[0])
    assert bot.model.requests[0]["messages"][-1]["content"] == "capital of France?"


@pytest.mark.parametrize(("user_id", "allowed"), [(ALICE_ID, False), (ADA_ID, True)])
async def test_admin_command_needs_manage_server(
    start_bot: BotFactory, user_id: int, allowed: bool
) -> None:
    bot = await start_bot()
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
    text = _content(edits[-1])
    if allowed:
        assert "Usage over the last 7d" in text and f"discord:{ALICE_ID}" in text
    else:
        assert "only Parley admins" in text
        assert "discord:" not in text and not re.search(r"\d{3}", text)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("user_id", "allowed"), [(ALICE_ID, False), (ADA_ID, True)])
async def test_usage_chart_is_an_ephemeral_png_for_admins_only(
    start_bot: BotFactory, user_id: int, allowed: bool
) -> None:
    bot = await start_bot()
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
        assert "only Parley admins" in _content(edit[-1])
        await eventually(lambda: not bot.adapter._answering)  # the answer is complete
        assert not [call for call in bot.fake.calls if call.files]
        assert not bot.fake.calls_to("POST", rf"/webhooks/\d+/{token}")
        return
    assert _content(edit[-1]) == "Usage chart, last 30d"  # "/usage chart 30d" was routed
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
    bot.engine.store.set_user_limit(f"discord:{ALICE_ID}", "blocked", 1)
    payload = await bot.fake.send_interaction("ask", options={"prompt": "hello?"})
    token = payload["token"]
    followup = await eventually(lambda: bot.fake.calls_to("POST", rf"/webhooks/\d+/{token}"))
    assert bot.fake.calls_to("DELETE", rf"/webhooks/\d+/{token}/messages/@original")
    assert followup[0].body["flags"] == 64 and "blocked" in _content(followup[0])
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
    assert bot.engine.knows_conversation(key)
    assert bool(bot.fake.calls_to("GET", rf"/channels/{thread_id}")) is not thread_cached


async def test_typed_command_in_a_channel_points_to_the_slash_command(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot()
    reply = (await bot.replies_to(await bot.mention("/usage 7d")))[0]
    assert "slash command /usage" in _content(reply)
    assert bot.model.request_count == 0


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
        lambda: any("ping" in _content(c) for c in bot.fake.calls_to("PATCH", r"/webhooks/.*"))
    )
    sent = [c for c in bot.fake.calls if c.method in ("POST", "PATCH")]
    sent = [c for c in sent if re.fullmatch(MESSAGE_CALLS, c.path) and "content" in c.body]
    assert len(sent) >= 4
    for call in sent:
        assert call.body["allowed_mentions"] == {"parse": []}, call
        assert "@everyone" not in _content(call) and "@here" not in _content(call)


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
    assert _content(first) == "*thinking…*"
    await bot.final_text(contains="word59")
    edits = bot.fake.calls_to("PATCH", r"/channels/\d+/messages/\d+")
    assert 1 <= len(edits) <= 3  # 60 deltas, one edit per interval at most
    assert _content(edits[-1]) == words


# -- failures -------------------------------------------------------------------------


async def test_failed_send_is_logged_and_the_conversation_kept(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot()
    bot.fake.fail("POST", rf"/channels/{CHANNEL_ID}/messages", 403, code=50013, times=10)
    bot.model.script(Text("You will never see this."))
    await bot.mention("hello?")
    window = await eventually(lambda: len(bot.engine.store.recent(CHANNEL_KEY, 10).messages) == 2)
    assert window
    stored = bot.engine.store.recent(CHANNEL_KEY, 10).messages
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
    await eventually(lambda: len(bot.engine.store.recent(CHANNEL_KEY, 10).messages) == 4)
    stored = [m.content for m in bot.engine.store.recent(CHANNEL_KEY, 10).messages]
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
