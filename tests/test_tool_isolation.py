"""A tool cannot hurt other users: hung sync tools do not starve anyone's model call,
and tool names the model makes up do not grow the metrics without bound."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from bot.llm import ModelClient
from bot.messages import ReplyKind
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import Call, FakeOpenAI, Text, ToolCalls
from tests.test_tool_loop import tool_messages
from tests.test_web_helpers import serve

# More than the loop's default executor has threads (min(32, cores + 4)): without a
# pool of their own, hung tools would hold every thread the model's resolver needs.
HUNG_CALLS = min(32, (os.cpu_count() or 1) + 4) + 2


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end, so hung tool threads return and the test leaves none behind."""
    event = threading.Event()
    yield event
    event.set()


async def test_hung_sync_tools_do_not_stop_another_users_model_call(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, release: threading.Event
) -> None:
    alice_engine = make_engine(tools=("hang",), tool_timeout_seconds=1.0)

    @alice_engine.tools.tool
    def hang(label: str) -> str:
        """Wait for something that never comes (a sync tool, in a thread)."""
        release.wait()
        return label

    fake_openai.script(
        ToolCalls([Call("hang", {"label": f"h{i}"}, id=f"c{i}") for i in range(HUNG_CALLS)])
    )
    await collect(alice_engine, message("hang please", user="alice", channel="ca"))
    results = [m["content"] for m in tool_messages(fake_openai.requests[1])]
    assert len(results) == HUNG_CALLS
    assert all(r == "Error: hang did not finish within 1 seconds." for r in results)

    # Bob's model client is new and reaches the model by name, so his call must resolve
    # it, on the loop's default executor, while every hung tool thread is still held.
    bob_engine = make_engine(deadline_seconds=5.0, first_token_seconds=5.0, max_attempts=1)
    await bob_engine.model.close()
    bob_engine.model = ModelClient(
        api_key="test", base_url=fake_openai.base_url.replace("127.0.0.1", "localhost"),
        timeout_seconds=5.0, first_token_seconds=5.0, deadline_seconds=5.0, max_attempts=1,
        retry_max_wait_seconds=0.1,
    )  # fmt: skip
    events = await collect(bob_engine, message("are you there?", user="bob", channel="cb"))
    assert not [e for e in events if e.kind is ReplyKind.ERROR]
    assert final_text(events) == "echo: are you there?"


async def tool_series(url: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of parley_tool_calls_total, scraped from GET /metrics."""
    async with ClientSession() as client, client.get(url + "/metrics") as response:
        text = await response.text()
    return {
        tuple(sorted(sample.labels.items()))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "parley_tool_calls_total"
    }


async def test_made_up_tool_names_add_at_most_one_metric_series(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    fake_openai.script(
        ToolCalls([Call("calculate", {"expression": "1+1"}, id="real")]),
        Text("2"),
        ToolCalls([Call(f"made_up_{i}", {}, id=f"c{i}") for i in range(200)]),
        Text("none"),
    )
    async with serve(engine) as url:
        await collect(engine, message("add", channel="c1"))
        before = await tool_series(url)
        await collect(engine, message("invent tools", channel="c2"))
        after = await tool_series(url)
    assert before == {(("status", "ok"), ("tool", "calculate"))}
    assert after - before == {(("status", "unknown_tool"), ("tool", "unknown"))}
