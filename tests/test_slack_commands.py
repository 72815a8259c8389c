"""/parley, "@Parley <command>", Parley and workspace admins, and usage charts in Slack."""

from __future__ import annotations

import pytest

from adapters.slack import RESET_IN_THREAD
from tests.fakes.openai_server import Text
from tests.slack_helpers import (
    MENTION_TS,
    TRUSTED,
    Harness,
    Start,
    mention,
    message,
    start,
    user_turns,
)

__all__ = ["start"]  # the fixture, for pytest to find here


# -- /parley ---------------------------------------------------------------------------


async def test_slash_command_as_admin_gets_usage_privately(start: Start) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))  # some usage to report
    assert await h.slash("usage 7d", user="UADMIN") == 200
    [response] = h.slack.responses
    assert response["response_type"] == "ephemeral"
    assert "Usage over the last 7d" in response["text"]
    assert "slack:U1" in response["text"]


async def test_slash_command_as_non_admin_is_refused_without_figures(start: Start) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    await h.slash("limits show", user="U2")
    [response] = h.slack.responses
    assert response["response_type"] == "ephemeral"
    assert "only Parley admins" in response["text"]
    assert "slack:U1" not in response["text"] and "Usage over" not in response["text"]


async def test_slash_commands_without_a_trigger_id_are_not_taken_for_repeats(
    start: Start,
) -> None:
    h = await start()
    await h.slash("help", trigger_id=None)
    await h.slash("help", trigger_id=None)
    assert len(h.slack.responses) == 2
    assert all("/reset" in response["text"] for response in h.slack.responses)


async def test_slash_reset_in_a_channel_points_to_the_thread(start: Start) -> None:
    h = await start()
    h.model.script(Text("Paris."), Text("About two million."))
    await h.event(mention("capital of France?"))
    await h.slash("reset")
    [response] = h.slack.responses
    assert response["response_type"] == "ephemeral"
    assert response["text"] == RESET_IN_THREAD
    # The thread's conversation is untouched.
    await h.event(message("and its population?", ts="1699999999.000200", thread_ts=MENTION_TS))
    assert ("assistant", "Paris.") in user_turns(h.model.requests[1])


async def test_mention_reset_in_a_thread_resets_it(start: Start) -> None:
    h = await start()
    h.model.script(Text("Paris."), Text("Which one?"))
    await h.event(mention("capital of France?"))
    await h.event(mention("reset", ts="1699999999.000200", thread_ts=MENTION_TS))
    [note] = h.slack.ephemerals("U1")
    assert note.text.startswith("Conversation reset")
    await h.event(message("and its population?", ts="1699999999.000300", thread_ts=MENTION_TS))
    assert user_turns(h.model.requests[1]) == [("user", "and its population?")]


async def test_slash_reset_in_a_dm_resets_the_dm(start: Start) -> None:
    h = await start()
    h.model.script(Text("Paris."), Text("Which one?"))
    await h.event(message("capital of France?", ts="1699999999.000500", channel="D1"))
    await h.slash("reset", channel="D1")
    [response] = h.slack.responses
    assert response["text"].startswith("Conversation reset")
    await h.event(message("and its population?", ts="1699999999.000600", channel="D1"))
    assert user_turns(h.model.requests[1]) == [("user", "and its population?")]


# -- workspace admins --------------------------------------------------------------------


async def test_workspace_admin_of_a_trusted_workspace_is_a_parley_admin(start: Start) -> None:
    h = await start(platform_admin_workspaces=TRUSTED)
    h.slack.admins.add("UWS")
    for _ in range(2):
        await h.slash("usage", user="UWS")
    assert len(h.slack.responses) == 2
    assert all("only Parley admins" not in r["text"] for r in h.slack.responses)
    assert len(h.slack.calls_to("users.info")) == 1  # cached per user


@pytest.mark.parametrize("form", ["slash", "mention"])
async def test_workspace_admin_of_an_untrusted_workspace_is_refused(
    start: Start, form: str
) -> None:
    # Anyone can create a workspace and invite the bot: its admins are nobody's admins.
    h = await start(platform_admin_workspaces=("slack:TOTHER", "web:local"))
    h.slack.admins.add("UWS")
    if form == "slash":
        await h.slash("limits show", user="UWS")
        [note] = [response["text"] for response in h.slack.responses]
    else:
        await h.event(mention("limits show", user="UWS"))
        [note] = [posted.text for posted in h.slack.ephemerals("UWS")]
    assert "only Parley admins can use /limits" in note


# -- "@Parley <command>" and "@Parley <question>" -----------------------------------------


@pytest.mark.parametrize("workspace_admin", [False, True])
async def test_mention_command_reaches_the_router_ephemerally(
    start: Start, workspace_admin: bool
) -> None:
    h = await start(platform_admin_workspaces=TRUSTED)
    if workspace_admin:
        h.slack.admins.add("U2")
    await h.event(mention("limits show", user="U2"))
    assert h.model.request_count == 0
    [reply] = h.slack.ephemerals("U2")
    assert reply.thread_ts == MENTION_TS
    refused = "only Parley admins can use /limits" in reply.text
    assert refused is not workspace_admin
    assert h.texts() == []


@pytest.mark.parametrize(
    "question",
    [
        "model this as a state machine",
        "reset my password how?",
        "usage of semicolons in Python?",
        "system design tips for a chat bot",
        "help me name this function",
    ],
)
async def test_question_starting_with_a_command_word_goes_to_the_model(
    start: Start, question: str
) -> None:
    h = await start(admins=("slack:U1",))  # an admin: no refusal could hide a command
    h.model.script(Text("Here is how."))
    await h.event(mention(question))
    assert user_turns(h.model.requests[0]) == [("user", question)]
    assert h.texts() == ["Here is how."]
    assert h.slack.ephemerals("U1") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "Parley commands:", id="bare-mention-is-help"),
        pytest.param("/model", "model", id="explicit-slash"),
        pytest.param("forget", "confirm", id="command-word"),
    ],
)
async def test_mention_commands_are_run_not_asked(start: Start, text: str, expected: str) -> None:
    h = await start(admins=("slack:U1",))
    await h.event(mention(text))
    assert h.model.request_count == 0
    [reply] = h.slack.ephemerals("U1")
    assert expected in reply.text


# -- usage charts ----------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART_TS = "1699999999.002000"


async def ask_for_chart(h: Harness, form: str, user: str, channel: str = "C1") -> None:
    """An admin command in either form: /parley usage chart, or @Parley usage chart."""
    if form == "slash":
        await h.slash("usage chart", user=user, channel=channel)
    else:
        await h.event(mention("usage chart", user=user, ts=CHART_TS))


def notes_to(h: Harness, form: str, user: str) -> list[str]:
    """What the user was told privately: response_url replies, or ephemerals."""
    if form == "slash":
        return [response["text"] for response in h.slack.responses]
    return [posted.text for posted in h.slack.ephemerals(user)]


@pytest.mark.parametrize("form", ["slash", "mention"])
async def test_usage_chart_is_uploaded_into_the_admins_dm(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))  # some usage, so there is a chart to draw
    await ask_for_chart(h, form, "UADMIN")
    [opened] = h.slack.calls_to("conversations.open")
    assert opened.params["users"] == "UADMIN"
    [chart] = h.slack.shared_files(h.slack.dm_for("UADMIN"))
    assert chart.data.startswith(PNG_SIGNATURE) and len(chart.data) > 1000
    assert (chart.filename, chart.title) == ("usage.png", "Usage chart, last 7d")
    assert chart.initial_comment == "Usage chart, last 7d"
    assert notes_to(h, form, "UADMIN") == ["I sent you the chart in a DM."]
    if form == "mention":
        assert [p.thread_ts for p in h.slack.ephemerals("UADMIN")] == [CHART_TS]
        assert h.texts(thread=CHART_TS) == []  # nothing public in the channel
    else:
        assert h.slack.responses[0]["response_type"] == "ephemeral"


@pytest.mark.parametrize("form", ["slash", "message"])
async def test_usage_chart_asked_in_the_dm_is_uploaded_there(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    dm = h.slack.dm_for("UADMIN")
    if form == "slash":
        await ask_for_chart(h, "slash", "UADMIN", channel=dm)
    else:
        await h.event(message("/usage chart 30d", ts=CHART_TS, channel=dm, user="UADMIN"))
        assert h.slack.calls_to("conversations.open") == []  # a DM event is the DM already
    [chart] = h.slack.shared_files()
    assert chart.channel == dm and chart.data.startswith(PNG_SIGNATURE)
    # The file's comment carries the text; a second message would only repeat it.
    assert h.slack.responses == [] and h.texts(dm, "") == []


@pytest.mark.parametrize("form", ["slash", "mention"])
async def test_usage_chart_is_refused_to_non_admins(start: Start, form: str) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    await ask_for_chart(h, form, "U2")
    [note] = notes_to(h, form, "U2")
    assert "only Parley admins can use /usage" in note
    assert h.slack.files == {}
    assert h.slack.calls_to("conversations.open") == []
    assert h.slack.calls_to("files.getUploadURLExternal") == []


@pytest.mark.parametrize(
    ("method", "named", "scope"),
    [
        pytest.param("files.getUploadURLExternal", True, "files:write", id="files-write"),
        pytest.param("conversations.open", False, "im:write", id="im-write"),
    ],
)
async def test_failed_chart_upload_names_the_missing_scope(
    start: Start, method: str, named: bool, scope: str
) -> None:
    h = await start(admins=("slack:UADMIN",))
    await h.event(mention("hello"))
    if named:  # Slack names the scope; the adapter knows it otherwise
        h.slack.fail(method, "missing_scope", needed=scope, provided="chat:write,commands")
    else:
        h.slack.fail(method, "missing_scope")
    await ask_for_chart(h, "mention", "UADMIN")
    [note] = notes_to(h, "mention", "UADMIN")
    assert note.startswith("Usage chart, last 7d\n:warning:")
    assert f"lacks the {scope} scope" in note
    assert h.slack.shared_files() == []


async def test_an_admin_of_another_org_in_a_shared_channel_is_refused(start: Start) -> None:
    h = await start(platform_admin_workspaces=TRUSTED)
    h.slack.admins.add("UEXT")
    h.slack.foreign_users.add("UEXT")  # an admin, but of the other org in Slack Connect
    await h.slash("limits show", user="UEXT")
    [response] = h.slack.responses
    assert "only Parley admins can use /limits" in response["text"]
