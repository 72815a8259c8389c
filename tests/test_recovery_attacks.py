"""Attacks on recovery as a team meets it: `python -m bot run slack` stopped while it
answers a question another process left behind."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.fakes import eventually
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.fakes.slack_server import EventSender, FakeSlack
from tests.replicas import WAIT, healthy
from tests.slack_helpers import SECRET
from tests.test_recovery import SLOW, exit_code, mention, slack_env, start, texts
from tests.test_run import free_port


async def test_sigterm_while_recovering_lets_the_recovered_answer_finish(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeOpenAI() as model:
        port = free_port()
        env, log = slack_env(tmp_path, model, slack, port), tmp_path / "parley.log"
        sender = EventSender(f"http://127.0.0.1:{port}/slack/events", SECRET)
        model.script(Text(SLOW, interval=0.5), Text(SLOW, interval=0.3))
        first = start(["run", "slack"], env, log)
        await healthy(port, first)
        thread = "1700000000.000300"
        assert await sender.event(mention("question", thread), event_id="Ev1") == 200
        await eventually(lambda: model.requests, within=WAIT)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        second = start(["run", "slack"], env, log)
        await healthy(port, second)
        await eventually(lambda: len(model.requests) == 2, within=WAIT)
        # A deploy stops the process while it streams the recovered answer.
        second.send_signal(signal.SIGTERM)
        assert await exit_code(second) == 0
        shown = texts(slack, thread)
        assert any("Sorry for the delay" in text for text in shown)
        assert shown[-1].strip() == SLOW  # finished within the grace period
        third = start(["run", "slack"], env, log)
        try:
            await healthy(port, third)
            await asyncio.sleep(2.0)  # two leases: nothing was left to recover
            assert len(model.requests) == 2
        finally:
            third.send_signal(signal.SIGTERM)
            assert await exit_code(third) == 0
        assert "Traceback" not in log.read_text()
