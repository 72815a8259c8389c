"""A withheld answer on Slack: what streamed is replaced in the thread, as users see it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.safety import WITHHELD
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.slack_helpers import Start, mention, slack_harnesses


@pytest.fixture
async def start(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    async with slack_harnesses(make_engine, fake_openai, monkeypatch) as run:
        yield run


async def test_a_streamed_answer_that_is_flagged_is_replaced_in_the_thread(
    start: Start, fake_openai: FakeOpenAI
) -> None:
    fake_openai.moderation_words = {"detonate": {"violence": 0.9}}
    fake_openai.script(Text("Step one: detonate the charge. " * 20, chunks=20, interval=0.01))
    h = await start(moderation_enabled=True, moderation_check_answers=True)
    await h.event(mention("tell me how"))
    assert any("detonate" in call.params.get("markdown_text", "") for call in h.slack.calls
               if call.method.startswith("chat."))  # fmt: skip  # it did stream
    assert h.texts() == [WITHHELD]
    assert not any("detonate" in posted.text for posted in h.slack.posted.values())
