"""The fake OpenAI server, driven by the real openai SDK over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_server import (
    Call,
    Delay,
    FakeOpenAI,
    Hang,
    Malformed,
    Status,
    Text,
    ToolCalls,
)

MODEL = "gpt-fake"
HELLO: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there"},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,  # the SDK only fills parsed_arguments for strict tools
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as c:
        yield c


async def test_non_streamed_text_with_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Text("Hi!", prompt_tokens=12, completion_tokens=3, cached_tokens=4))
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO)

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.content == "Hi!"
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 15
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4
    assert fake.request_count == 1
    assert fake.requests[0]["messages"] == HELLO
    assert fake.request_headers[0]["authorization"] == "Bearer test"


async def test_default_echo_and_estimated_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens >= 1
    assert completion.usage.completion_tokens >= 1
    assert fake.pending == 0


async def test_streamed_text_with_include_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Text("one two three four", prompt_tokens=7, completion_tokens=4))
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    deltas: list[str] = []
    finish: list[str | None] = []
    usages = []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usages.append(chunk.usage)
        for choice in chunk.choices:
            deltas.append(choice.delta.content or "")
            finish.append(choice.finish_reason)

    assert "".join(deltas) == "one two three four"
    assert sum(1 for d in deltas if d) == 4  # one delta per word by default
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert all(u is None for u in usages[:-1])
    assert usages[-1] is not None and usages[-1].total_tokens == 11


async def test_chunks_controls_delta_count(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Text("abcdefghij", chunks=2))
    stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    chunks = [c async for c in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    assert [p for p in pieces if p] == ["abcde", "fghij"]
    assert all(c.choices and c.usage is None for c in chunks)  # no usage chunk unless asked


async def test_paced_stream_sends_each_delta_in_its_own_write(fake: FakeOpenAI) -> None:
    # Read raw: every content delta arrives alone, as from a real model, so a client
    # reads (and pays for) each one; unpaced, they come in one burst.
    fake.script(Text("one two three four", interval=0.05))
    body = {"model": MODEL, "messages": HELLO, "stream": True}
    reads = []
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.base_url + "/chat/completions", json=body) as response:
            while chunk := await response.content.readany():
                reads.append(chunk.decode())
    words = [[w for w in ("one", "two", "three", "four") if f'"{w}' in read] for read in reads]
    assert [found for found in words if found] == [["one"], ["two"], ["three"], ["four"]]


async def test_default_answers_when_nothing_is_scripted(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.default = Text("the standing answer")
    fake.script(Text("scripted first"))
    first = await client.chat.completions.create(model=MODEL, messages=HELLO)
    second = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert first.choices[0].message.content == "scripted first"
    assert second.choices[0].message.content == "the standing answer"


async def test_stream_helper_text(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Text("streamed reply here"))
    async with client.chat.completions.stream(model=MODEL, messages=HELLO) as stream:
        events = [event.type async for event in stream]
        final = await stream.get_final_completion()
    assert "content.delta" in events and "content.done" in events
    assert final.choices[0].message.content == "streamed reply here"
    assert final.choices[0].finish_reason == "stop"


async def test_stream_helper_tool_calls(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(
        ToolCalls([Call("get_weather", {"city": "Paris"}), Call("get_weather", {"city": "Oslo"})])
    )
    async with client.chat.completions.stream(
        model=MODEL,
        messages=HELLO,
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        done = [e async for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = await stream.get_final_completion()

    assert [e.parsed_arguments for e in done] == [{"city": "Paris"}, {"city": "Oslo"}]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert [c.function.parsed_arguments for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert len({c.id for c in calls}) == 2
    assert final.usage is not None


async def test_parallel_tool_calls_non_streamed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(
        ToolCalls(
            [
                Call("search", {"q": "cats"}, id="call_a"),
                Call("lookup", '{"broken": ', id="call_b"),  # malformed JSON, sent verbatim
            ]
        )
    )
    completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.type) for c in calls] == [("call_a", "function"), ("call_b", "function")]
    assert calls[0].function.name == "search"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"q": "cats"}  # type: ignore[union-attr]
    assert calls[1].function.arguments == '{"broken": '  # type: ignore[union-attr]


async def test_rate_limit_with_retry_after(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Status(429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    assert fake.request_count == 1


async def test_server_error_is_retried_by_sdk(fake: FakeOpenAI) -> None:
    fake.script(Status(500, retry_after=0.01))
    async with AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=1) as c:
        completion = await c.chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    assert fake.request_count == 2


async def test_bad_request_custom_body(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    body = {"error": {"message": "too long", "type": "invalid_request_error", "code": "ctx"}}
    fake.script(Status(400, body))
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.code == "ctx"
    assert "too long" in info.value.message


async def test_malformed_non_streamed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Malformed())
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model=MODEL, messages=HELLO)


async def test_malformed_streamed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Malformed())
    stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


async def test_hang_times_out_client(fake: FakeOpenAI) -> None:
    fake.script(Hang(30))
    async with AsyncOpenAI(base_url=fake.base_url, api_key="test", timeout=0.3, max_retries=0) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model=MODEL, messages=HELLO)
    # The hanging handler must not block other requests.
    async with AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as c:
        completion = await c.chat.completions.create(model=MODEL, messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    # Leaving the fixture stops the server while the hang is pending: must be quick.


async def test_stop_with_pending_hang_is_fast() -> None:
    fake = FakeOpenAI()
    await fake.start()
    fake.script(Hang(30))
    c = AsyncOpenAI(base_url=fake.base_url, api_key="test", timeout=0.2, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        await c.chat.completions.create(model=MODEL, messages=HELLO)
    await asyncio.wait_for(fake.stop(), 5)  # a 30 s hang must not hold it up
    await c.close()


async def test_delay_then_response(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.script(Delay(0.05, then=Text("late")), Text("next"))
    first = await client.chat.completions.create(model=MODEL, messages=HELLO)
    second = await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert first.choices[0].message.content == "late"
    assert second.choices[0].message.content == "next"


async def test_models_endpoint(client: AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == [MODEL]


def test_run_in_thread_with_sync_client() -> None:
    with FakeOpenAI().run_in_thread() as fake:
        fake.script(Text("from a thread"))
        client = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        first = client.chat.completions.create(model=MODEL, messages=HELLO)
        second = client.chat.completions.create(model=MODEL, messages=HELLO)
        client.close()
    assert first.choices[0].message.content == "from a thread"
    assert second.choices[0].message.content == "echo: hello there"
    assert fake.request_count == 2


async def test_cached_tokens_follow_the_prefix_shared_with_the_last_prompt_of_the_key(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """As OpenAI reports them: >= 1,024 tokens, in 128-token steps, per prompt_cache_key."""
    long_history: list[Any] = [
        {"role": "system", "content": "s" * 2000},
        {"role": "user", "content": "u" * 4000},
        {"role": "assistant", "content": "a" * 1000},
    ]

    async def cached(messages: list[Any], key: str) -> int:
        completion = await client.chat.completions.create(
            model=MODEL, messages=messages, extra_body={"prompt_cache_key": key}
        )
        assert completion.usage is not None and completion.usage.prompt_tokens_details
        return completion.usage.prompt_tokens_details.cached_tokens or 0

    first = [*long_history, {"role": "user", "content": "next"}]
    assert await cached(first, "k1") == 0  # nothing seen before
    # 7,000 shared characters = 1,750 tokens, rounded down to 13 * 128.
    assert await cached([*long_history, {"role": "user", "content": "other"}], "k1") == 1664
    assert await cached(first, "k2") == 0  # another conversation's cache
    changed_start = [{"role": "system", "content": "t" * 2000}, *first[1:]]
    assert await cached(changed_start, "k1") == 0  # the prefix changed at its start
    short = [{"role": "user", "content": "x" * 3000}]
    await cached(short, "k3")
    assert await cached([*short, {"role": "user", "content": "y"}], "k3") == 0  # < 1,024
