"""The neutral command router: admins, refusals that reveal nothing, usage figures."""

from __future__ import annotations

import pytest

from bot.commands import BECOME_ADMIN
from bot.messages import ReplyKind
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI, Text

ADMIN = "test:root"
ADMIN_COMMANDS = [
    "/audit",
    "/audit 30d limits",
    "/limits show",
    "/limits set bob rpm 5",
    "/block bob",
    "/unblock bob",
    "/forget",
    "/system",
    "/system Be terse.",
    "/model",
    "/model gpt-4o",
]


async def seed_usage(engine_factory: EngineFactory, fake: FakeOpenAI) -> None:
    engine = engine_factory(admins=(ADMIN,))
    fake.script(
        Text("a", prompt_tokens=100, completion_tokens=10),
        Text("b", prompt_tokens=200, completion_tokens=20, cached_tokens=50),
    )
    await collect(engine, message("one", user="alice"))
    await collect(engine, message("two", user="bob", channel="c2"))


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
async def test_non_admins_are_refused_and_see_no_figures(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, command: str
) -> None:
    await seed_usage(make_engine, fake_openai)
    engine = make_engine(admins=(ADMIN,))
    [reply] = await collect(engine, message(command, user="mallory"))
    name = command.split()[0][1:]
    assert reply.kind is ReplyKind.ERROR
    assert reply.text == f"Sorry, only Parley admins can use /{name}." + BECOME_ADMIN
    assert reply.private
    assert not any(ch.isdigit() for ch in reply.text)


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
async def test_admins_are_answered(make_engine: EngineFactory, command: str) -> None:
    engine = make_engine(admins=(ADMIN,))
    [reply] = await collect(engine, message(command, user="root"))
    assert reply.kind is ReplyKind.FINAL
    assert reply.private
    assert "only Parley admins" not in reply.text


async def test_usage_sums_equal_what_the_server_reported(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    await seed_usage(make_engine, fake_openai)
    engine = make_engine(admins=(ADMIN,))
    rows = {row["key"]: row for row in await engine.store.usage_report(0, "user")}
    assert rows["test:alice"]["prompt_tokens"] == 100
    assert rows["test:bob"]["total_tokens"] == 220
    assert rows["test:bob"]["cached_tokens"] == 50
    text = final_text(await collect(engine, message("/usage 7d user", user="root")))
    assert "test:alice" in text and "test:bob" in text
    total_line = next(line for line in text.splitlines() if line.startswith("TOTAL"))
    assert total_line.split()[1:7] == ["2", "300", "50", "16.7%", "30", "330"]  # cached: 50
    by_channel = final_text(await collect(engine, message("/usage 7d channel", user="root")))
    assert "test:w1:c1" in by_channel and "test:w1:c2" in by_channel


async def test_unknown_model_cost_is_unknown_not_zero(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=(ADMIN,), model="mystery-model")
    fake_openai.script(Text("x", prompt_tokens=1000, completion_tokens=100))
    await collect(engine, message("hi"))
    [row] = await engine.store.usage_report(0, "model")
    assert row["key"] == "mystery-model"
    assert row["cost_usd"] is None
    text = final_text(await collect(engine, message("/usage 1d model", user="root")))
    assert "unknown" in text


@pytest.mark.parametrize("period", ["7", "7y", "-1d", "0d", "week"])
async def test_bad_periods_get_a_clear_message(make_engine: EngineFactory, period: str) -> None:
    engine = make_engine(admins=(ADMIN,))
    [reply] = await collect(engine, message(f"/usage {period}", user="root"))
    assert reply.kind is ReplyKind.ERROR
    assert "not understood" in reply.text and "7d" in reply.text


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/limits set bob rpm lots", "is not a number"),
        ("/limits set bob speed 5", "Unknown limit"),
        ("/limits set bob rpm -3", "cannot be negative"),
        ("/limits set bob rpm 99999999999999999999999", "more than any limit needs"),
        ("/limits frobnicate", "Usage: /limits"),
        ("/block", "Usage: /block"),
        ("/nonsense", "Unknown command /nonsense"),
    ],
)
async def test_bad_arguments_get_a_clear_message(
    make_engine: EngineFactory, command: str, expected: str
) -> None:
    engine = make_engine(admins=(ADMIN,))
    assert expected in final_text(await collect(engine, message(command, user="root")))


async def test_limits_set_show_block_in_chat(make_engine: EngineFactory) -> None:
    engine = make_engine(admins=(ADMIN,), requests_per_minute=20)
    await collect(engine, message("/limits set <@bob> rpm 2", user="root"))
    await collect(engine, message("/block slack:U9", user="root"))
    shown = final_text(await collect(engine, message("/limits show", user="root")))
    assert "test:bob: 2 requests/minute" in shown
    assert "slack:U9" in shown and "BLOCKED" in shown
    one = final_text(await collect(engine, message("/limits show bob", user="root")))
    assert one.startswith("test:bob: 2 requests/minute")


async def test_forget_needs_confirmation_and_deletes_the_channel_only(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=(ADMIN,))
    await collect(engine, message("private thing"))
    await collect(engine, message("in a thread", thread="t1"))
    await collect(engine, message("elsewhere", channel="c2"))
    assert await engine.store.count_messages(message("x").conversation) == 2
    early = final_text(await collect(engine, message("/forget confirm", user="root")))
    assert "Send /forget confirm" in early  # no confirmation was pending: nothing deleted
    assert await engine.store.count_messages(message("x").conversation) == 2
    await collect(engine, message("/forget", user="root"))
    done = final_text(await collect(engine, message("/forget confirm", user="root")))
    assert done == "Deleted 4 stored messages of this channel."
    assert await engine.store.count_messages(message("x").conversation) == 0
    assert await engine.store.count_messages(message("x", channel="c2").conversation) == 2


async def test_system_and_model_apply_to_this_channel(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=(ADMIN,))
    await collect(engine, message("/system Answer in French.", user="root"))
    await collect(engine, message("/model gpt-4o", user="root"))
    await collect(engine, message("bonjour"))
    request = fake_openai.requests[-1]
    assert request["model"] == "gpt-4o"
    assert request["messages"][0] == {"role": "system", "content": "Answer in French."}
    await collect(engine, message("hello", channel="c2"))
    assert fake_openai.requests[-1]["model"] == "gpt-4o-mini"
    await collect(engine, message("/model reset", user="root"))
    await collect(engine, message("again"))
    assert fake_openai.requests[-1]["model"] == "gpt-4o-mini"


async def test_commands_make_no_model_call(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(admins=(ADMIN,))
    for command in ["/help", "/reset", *ADMIN_COMMANDS]:
        await collect(engine, message(command, user="root"))
    assert fake_openai.request_count == 0


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("usage", "/usage"),
        ("usage 7d channel", "/usage 7d channel"),
        ("usage chart 30d", "/usage chart 30d"),
        ("help", "/help"),
        ("", "/help"),
        ("reset", "/reset"),
        ("forget confirm", "/forget confirm"),
        ("limits set <@U123> rpm 5", "/limits set <@U123> rpm 5"),
        ("block <@U123>", "/block <@U123>"),
        ("/model gpt-4o", "/model gpt-4o"),
        ("model this as a state machine", None),
        ("system design tips?", None),
        ("reset my password how?", None),
        ("usage of semicolons in English?", None),
        ("block comments in C?", None),
        ("help me write a poem", None),
    ],
)
def test_mentions_become_commands_only_when_they_parse(text: str, command: str | None) -> None:
    from bot.commands import mention_command

    assert mention_command(text) == command


@pytest.mark.parametrize(
    ("workspaces", "message_workspace", "allowed"),
    [
        ((), "w1", False),
        (("test:w1",), "w1", True),
        (("test:w1",), "w2", False),
        (("other:w1",), "w1", False),
    ],
)
async def test_platform_admins_count_only_in_trusted_workspaces(
    make_engine: EngineFactory, workspaces: tuple[str, ...], message_workspace: str, allowed: bool
) -> None:
    engine = make_engine(platform_admin_workspaces=workspaces)
    [reply] = await collect(
        engine, message("/limits show", platform_admin=True, workspace=message_workspace)
    )
    assert (reply.kind is ReplyKind.FINAL) is allowed


async def test_a_command_that_breaks_still_answers(
    make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(admins=(ADMIN,))
    engine.store.db.execute("DROP TABLE limits")  # a broken database, as an example
    [reply] = await collect(engine, message("/limits show", user="root"))
    assert reply.kind is ReplyKind.ERROR
    assert reply.text == "/limits failed; the error was logged."
    assert "command /limits failed" in caplog.text
