"""Access lists as people meet them on Slack and Discord, over the fakes' real sockets."""

from __future__ import annotations

from bot.access import NO_DMS, NOT_FOR_YOU, NOT_HERE
from tests.discord_helpers import TRUSTED_GUILD, BotFactory, content, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID, ALICE_ID, CHANNEL_ID, DM_CHANNEL_ID, GUILD_ID
from tests.fakes.slack_server import TEAM_ID
from tests.slack_helpers import Start, mention, start

__all__ = ["start", "start_bot"]  # the fixtures, for pytest to find here


async def test_slack_blocked_user_is_told_privately_once_and_never_reaches_the_model(
    start: Start,
) -> None:
    h = await start(access_block_users=("slack:U2",))
    await h.event(mention("hello", user="U2", ts="1700000001.000100"))
    await h.event(mention("hello?", user="U2", ts="1700000002.000100"))
    assert h.model.request_count == 0
    assert [posted.text for posted in h.slack.ephemerals("U2")] == [f":warning: {NOT_FOR_YOU}"]
    await h.event(mention("hello", user="U1", ts="1700000003.000100"))
    assert h.model.request_count == 1


async def test_slack_channel_outside_the_allow_list_gets_no_model_call(start: Start) -> None:
    h = await start(access_allow_channels=(f"slack:{TEAM_ID}:C9",))
    await h.event(mention("hello"))
    assert h.model.request_count == 0
    assert h.texts() == [f":warning: {NOT_HERE}"]


async def test_discord_access_slash_command_changes_the_next_message(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot(platform_admin_workspaces=TRUSTED_GUILD)
    # A non-admin learns nothing about the lists.
    shown = await bot.fake.send_interaction("access", options={"action": "show"})
    denied = await eventually(
        lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{shown['token']}/.*")
    )
    assert "Sorry, only Parley admins can use /access." in content(denied[-1])
    assert str(CHANNEL_ID) not in content(denied[-1]) and str(GUILD_ID) not in content(denied[-1])
    options = {"action": "block", "kind": "user", "target": str(ALICE_ID)}
    payload = await bot.fake.send_interaction("access", options=options, user_id=ADA_ID)
    done = await eventually(
        lambda: bot.fake.calls_to("PATCH", rf"/webhooks/\d+/{payload['token']}/.*")
    )
    assert content(done[-1]) == f"Done: user discord:{ALICE_ID} is on the block list."
    refused = await bot.mention("hello", author=ALICE_ID)
    calls = await bot.replies_to(refused)
    assert NOT_FOR_YOU in content(calls[0])
    assert bot.model.request_count == 0


async def test_discord_dms_off_refuses_a_dm_but_answers_in_channels(
    start_bot: BotFactory,
) -> None:
    bot = await start_bot(access_dms=False)
    await bot.fake.send_message("hello", channel_id=DM_CHANNEL_ID, guild_id=None)
    assert NO_DMS in await bot.final_text(DM_CHANNEL_ID, contains=NO_DMS)
    assert bot.model.request_count == 0
    await bot.mention("hello")
    await bot.final_text(contains="echo: hello")
