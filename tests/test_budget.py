"""Spend caps: crossing 80% and 100% of a workspace budget DMs every admin once per
period on the fake Slack, then the cap refuses or falls back to a cheaper model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.budget import period_start
from bot.runner import connect_alerts
from tests.conftest import EngineFactory, collect, final_text, message
from tests.discord_helpers import BotFactory, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import ADA_ID
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID
from tests.replicas import WAIT, cluster
from tests.slack_helpers import Harness, Start, mention, slack_harnesses

__all__ = ["start_bot"]  # the fixture, for pytest to find here
ADMINS = ("slack:UADMIN", "slack:UBOSS", "console:ops")
# gpt-4o-mini costs $0.15 per million prompt tokens: each answer here costs $0.003.
COSTLY = {"prompt_tokens": 20_000, "completion_tokens": 0}
BUDGET = {
    "admins": ADMINS,
    "budget_workspaces": {f"slack:{TEAM_ID}": {"daily_usd": 0.01}},
}


@pytest.fixture
async def start(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    async with slack_harnesses(make_engine, fake_openai, monkeypatch) as run:
        yield run


async def ask(h: Harness, number: int) -> None:
    await h.event(mention(f"question {number}", ts=f"1700000000.{number:06d}"))


def dms(h: Harness, user: str) -> list[str]:
    return [posted.text for posted in h.slack.thread(h.slack.dm_for(user))]


async def running(start: Start, **settings: Any) -> Harness:
    h = await start(**settings)
    connect_alerts(h.adapter.engine, [h.adapter])  # as the runner does
    return h


async def test_warning_and_cap_alert_each_admin_once_then_requests_are_refused(
    start: Start, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    h = await running(start, **BUDGET)
    fake_openai.default = Text("an answer", **COSTLY)
    for number in range(1, 4):  # $0.009 spent: past 80% of $0.01
        await ask(h, number)
    assert dms(h, "UADMIN") == []  # crossing is noticed by the next request
    await ask(h, 4)  # answered: under the cap before it, $0.012 after
    assert fake_openai.request_count == 4
    for admin in ("UADMIN", "UBOSS"):
        [warning] = dms(h, admin)
        assert warning.startswith(f"Parley budget warning: slack:{TEAM_ID} has spent $0.01")
        assert "daily cap of $0.01 (90%)" in warning and "still answered" in warning
    await ask(h, 5)
    await ask(h, 6)
    assert fake_openai.request_count == 4  # refused at the cap: the model is not called
    refusals = [posted.text for posted in h.slack.ephemerals("U1")]
    assert len(refusals) == 2 and "reached its daily spending cap" in refusals[0]
    assert "tomorrow (00:00 UTC)" in refusals[0]
    for admin in ("UADMIN", "UBOSS"):
        warning, cap = dms(h, admin)  # one of each, however many requests came
        assert cap.startswith("Parley budget cap:") and "refused until the period ends" in cap
    assert len(h.slack.calls_to("conversations.open")) == 4
    assert "alert to admins: Parley budget cap" in caplog.text  # console:ops reads the log
    metrics = h.adapter.engine.metrics.exposition().decode()
    assert 'parley_budget_alerts_total{level="cap",period="daily"} 1.0' in metrics
    assert 'parley_rate_limit_refusals_total{limit="budget"} 2.0' in metrics
    actions = [entry.action for entry in await h.adapter.engine.store.audit_entries(0)]
    assert actions == ["budget.cap", "budget.warning"]


async def test_another_replica_does_not_alert_again(
    start: Start, make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    h = await running(start, **BUDGET)
    fake_openai.default = Text("an answer", **COSTLY)
    for number in range(1, 6):
        await ask(h, number)
    assert len(dms(h, "UADMIN")) == 2
    replica = make_engine(**BUDGET)  # the same database, its own memory
    connect_alerts(replica, [h.adapter])
    refused = final_text(await collect(replica, message("hi", platform="slack", workspace=TEAM_ID)))
    assert "spending cap" in refused
    assert len(dms(h, "UADMIN")) == 2


async def test_at_the_cap_a_fallback_model_answers_with_a_note(
    start: Start, fake_openai: FakeOpenAI
) -> None:
    h = await running(start, **BUDGET, budget_fallback_model="gpt-4.1-nano")
    fake_openai.default = Text("an answer", **COSTLY)
    for number in range(1, 6):
        await ask(h, number)
    models = [request["model"] for request in fake_openai.requests]
    assert models == ["gpt-4o-mini"] * 4 + ["gpt-4.1-nano"]
    thread = h.texts(thread="1700000000.000005")
    assert thread[-1] == "an answer"
    assert any("a smaller model, gpt-4.1-nano, answered" in text for text in thread)
    [_, cap] = dms(h, "UADMIN")
    assert "answered by gpt-4.1-nano" in cap


async def test_a_bot_wide_monthly_cap_counts_every_workspace(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(budget_monthly_usd=0.005)
    fake_openai.default = Text("an answer", **COSTLY)
    assert final_text(await collect(engine, message("one", workspace="A"))) == "an answer"
    assert final_text(await collect(engine, message("two", workspace="B"))) == "an answer"
    refused = final_text(await collect(engine, message("three", workspace="C")))
    assert "monthly spending cap ($0.01)" in refused and "next month" in refused


def test_periods_start_at_utc_midnight_and_the_first_of_the_month() -> None:
    at = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    assert period_start("daily", at) == (1_795_996_800.0, "2026-11-30")
    assert period_start("monthly", at) == (1_793_491_200.0, "2026-11")


async def test_discord_admins_get_the_alert_as_a_direct_message(
    start_bot: BotFactory, fake_openai: FakeOpenAI
) -> None:
    bot = await start_bot(admins=(f"discord:{ADA_ID}",), budget_daily_usd=0.002)
    connect_alerts(bot.engine, [bot.adapter])
    fake_openai.default = Text("an answer", **COSTLY)
    await bot.replies_to(await bot.mention("spend"))
    await bot.replies_to(await bot.mention("spend more"))  # refused: past the cap
    assert fake_openai.request_count == 1
    dm = await eventually(lambda: bot.fake.dm_channels.get(ADA_ID))
    [alert] = await eventually(lambda: bot.fake.channel_contents(dm))
    assert alert.startswith("Parley budget cap: Parley has spent $0.00 of its daily cap")


async def test_a_running_bot_sends_its_alerts_as_a_user_meets_it(tmp_path: Path) -> None:
    # python -m bot run slack, as deployed: the runner connects the alerts to Slack.
    config = f'[budget.workspaces."slack:{TEAM_ID}"]\ndaily_usd = 0.007\n'
    database = str(tmp_path / "bot.db")
    async with cluster(1, database, tmp_path, config, PARLEY_ADMINS="slack:UADMIN") as bots:
        bots.model.default = Text("an answer", **COSTLY)
        [replica] = bots.replicas
        for number in range(1, 5):  # $0.003 each: q3 crosses 80%, q4 finds the cap
            ts = f"1700000400.{number:06d}"
            await replica.sender.event(
                {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> q{number}",
                 "ts": ts, "channel": "C1", "team": TEAM_ID, "event_ts": ts},
                event_id=f"Ev{ts}",
            )  # fmt: skip

            def done(ts: str = ts) -> bool:
                answered = any(p.text == "an answer" for p in bots.slack.thread("C1", ts))
                return answered or any(p.thread_ts == ts for p in bots.slack.ephemerals("U1"))

            await eventually(done, within=WAIT)
        [warning, cap] = await eventually(
            lambda: [p.text for p in bots.slack.thread(bots.slack.dm_for("UADMIN"))]
            if len(bots.slack.thread(bots.slack.dm_for("UADMIN"))) == 2 else None,
            within=WAIT,
        )  # fmt: skip
        assert warning.startswith("Parley budget warning:") and cap.startswith("Parley budget cap:")
        assert len(bots.model.requests) == 3
        [refusal] = [p.text for p in bots.slack.ephemerals("U1")]
        assert "reached its daily spending cap" in refusal
        assert "alert to admins" in bots.logs() and "Traceback" not in bots.logs()
