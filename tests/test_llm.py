"""The model client against the fake server: retries, timeouts, usage, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.llm import Completion, Delta, ModelClient, ModelError, SSEBuffer
from tests.fakes.openai_server import (
    Call,
    FakeOpenAI,
    Hang,
    Malformed,
    Status,
    Text,
    ToolCalls,
)

PROMPT = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[ModelClient]:
    model = ModelClient(
        api_key="test",
        base_url=fake_openai.base_url,
        timeout_seconds=0.5,
        max_attempts=3,
        retry_max_wait_seconds=0.05,
    )
    yield model
    await model.close()


async def complete(
    client: ModelClient, prompt: list[dict[str, Any]] = PROMPT
) -> tuple[str, Completion]:
    streamed = ""
    final = None
    async for item in client.stream("gpt-fake", prompt):
        if isinstance(item, Delta):
            streamed += item.text
        else:
            final = item
    assert final is not None
    return streamed, final


@pytest.mark.parametrize(
    "fault",
    [Status(429), Status(500), Status(502), Status(503), Hang(5)],
    ids=["429", "500", "502", "503", "timeout"],
)
async def test_retryable_failures_are_retried(
    client: ModelClient, fake_openai: FakeOpenAI, fault: object
) -> None:
    fake_openai.script(fault, Text("recovered"))  # type: ignore[arg-type]
    streamed, final = await complete(client)
    assert final.text == "recovered" and final.text.startswith(streamed)
    assert fake_openai.request_count == 2
    assert final.attempts == 2


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (400, "bad_request"),
        (401, "auth"),
        (403, "auth"),
        (404, "model_missing"),
        (422, "bad_request"),
    ],
)
async def test_other_client_errors_are_never_retried(
    client: ModelClient, fake_openai: FakeOpenAI, code: int, kind: str
) -> None:
    fake_openai.script(Status(code))
    with pytest.raises(ModelError) as raised:
        await complete(client)
    assert raised.value.kind == kind
    assert fake_openai.request_count == 1


async def test_gives_up_after_max_attempts(client: ModelClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Status(500), Status(500), Status(500), Text("too late"))
    with pytest.raises(ModelError) as raised:
        await complete(client)
    assert raised.value.kind == "unavailable"
    assert fake_openai.request_count == 3


async def test_timeout_is_reported_as_timeout(client: ModelClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Hang(5), Hang(5), Hang(5))
    with pytest.raises(ModelError) as raised:
        await complete(client)
    assert raised.value.kind == "timeout"
    assert fake_openai.request_count == 3


async def test_retry_after_is_honoured(fake_openai: FakeOpenAI) -> None:
    model = ModelClient(
        api_key="t", base_url=fake_openai.base_url, timeout_seconds=2,
        max_attempts=2, retry_max_wait_seconds=5,
    )  # fmt: skip
    fake_openai.script(Status(429, retry_after=0.4), Text("ok"))
    waits: list[float] = []
    wait = model.wait

    def recorded(state: Any) -> float:
        waits.append(wait(state))
        return waits[-1]

    model.wait = recorded  # type: ignore[assignment]
    async for _ in model.stream("gpt-fake", PROMPT):
        pass
    await model.close()
    assert waits == [pytest.approx(0.4)]
    assert fake_openai.request_count == 2


async def test_usage_includes_cached_tokens_and_asks_for_stream_usage(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Text("hey", prompt_tokens=50, completion_tokens=7, cached_tokens=32))
    _, final = await complete(client)
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (50, 7)
    assert final.usage.cached_tokens == 32
    body = fake_openai.requests[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_streamed_parallel_tool_calls_are_assembled(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        ToolCalls([Call("calculate", {"expression": "2+2"}), Call("current_time", {})])
    )
    _, final = await complete(client)
    assert [(c.name, c.arguments) for c in final.tool_calls] == [
        ("calculate", '{"expression": "2+2"}'),
        ("current_time", "{}"),
    ]
    assert all(call.id for call in final.tool_calls)
    assert final.finish_reason == "tool_calls"


async def test_api_key_is_sent_as_bearer(client: ModelClient, fake_openai: FakeOpenAI) -> None:
    await complete(client)
    assert fake_openai.request_headers[-1]["Authorization"] == "Bearer test"


async def test_the_host_is_not_described_to_the_server(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    # Some OpenAI-compatible gateways reject the SDK's X-Stainless-* platform headers.
    await complete(client)
    sent = {name.lower() for name in fake_openai.request_headers[-1]}
    assert not sent & {"x-stainless-os", "x-stainless-arch", "x-stainless-runtime-version"}
    assert "content-type" in sent


async def test_a_retry_after_longer_than_allowed_gives_up_at_once(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Status(429, retry_after=60), Text("too late"))
    with pytest.raises(ModelError) as raised:
        await complete(client)
    assert raised.value.kind == "rate_limited"
    assert fake_openai.request_count == 1  # gave up at once, without a second try


async def test_a_refused_connection_is_refused_not_a_timeout() -> None:
    import socket

    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = ModelClient(
        api_key="t", base_url=f"http://127.0.0.1:{port}/v1", timeout_seconds=2,
        max_attempts=2, retry_max_wait_seconds=0.01,
    )  # fmt: skip
    with pytest.raises(ModelError) as raised:
        async for _ in model.stream("gpt-fake", PROMPT):
            pass
    await model.close()
    assert raised.value.kind == "refused"
    assert "OPENAI_BASE_URL" in raised.value.user_message


async def test_a_stream_that_stalls_after_its_first_chunk_times_out_and_is_retried(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import Stall

    fake_openai.script(Stall(5), Stall(5), Stall(5))
    with pytest.raises(ModelError) as raised:
        await asyncio.wait_for(complete(client), timeout=10)
    assert raised.value.kind == "timeout"
    assert fake_openai.request_count == 3


async def test_a_stream_cut_after_text_is_not_retried(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.openai_server import Cut

    fake_openai.script(Cut("partial answer here"), Text("a second answer"))
    streamed = ""
    with pytest.raises(ModelError):
        async for item in client.stream("gpt-fake", PROMPT):
            assert isinstance(item, Delta), "no Completion for a cut stream"
            streamed += item.text
    assert streamed.startswith("partial")
    assert fake_openai.request_count == 1  # retrying would repeat what the user saw


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/chat/completions"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://gateway.internal/openai/v1", "http://gateway.internal/openai/v1/chat/completions"),
        (None, "https://api.openai.com/v1/chat/completions"),
    ],
)
async def test_the_completions_url_is_joined_as_the_sdk_joins_it(
    base_url: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the SDK's own default
    client = ModelClient(
        api_key="k", base_url=base_url, timeout_seconds=1, max_attempts=1,
        retry_max_wait_seconds=1,
    )  # fmt: skip
    try:
        assert client.completions_url == expected
    finally:
        await client.close()


# -- reading the event stream ------------------------------------------------------------


def events_of(*reads: bytes) -> list[bytes]:
    buffer = SSEBuffer()
    return [event for read in reads for event in buffer.feed(read)]


def test_events_split_anywhere_across_reads_come_out_whole() -> None:
    stream = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    expected = [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]
    for cut in range(len(stream) + 1):
        assert events_of(stream[:cut], stream[cut:]) == expected


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends_even_split_between_reads(newline: bytes) -> None:
    stream = b"data: one" + newline * 2 + b"data: two" + newline * 2
    for cut in range(len(stream) + 1):
        assert events_of(stream[:cut], stream[cut:]) == [b"one", b"two"]


def test_comments_other_fields_and_multiline_data() -> None:
    stream = b": keep-alive\n\nevent: chunk\nid: 7\ndata: first\ndata:second\n\nretry: 5\n\n"
    assert events_of(stream) == [b"first\nsecond"]


async def test_an_error_sent_inside_the_stream_is_a_model_error(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Malformed('{"error": {"message": "overloaded", "type": "server_error"}}'))
    with pytest.raises(ModelError) as caught:
        await complete(client)
    assert caught.value.kind == "malformed" and "overloaded" in str(caught.value)
    assert fake_openai.request_count == 1  # not retried, as the SDK's stream did


async def test_an_unreadable_chunk_is_malformed(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Malformed("this is not json"))
    with pytest.raises(ModelError) as caught:
        await complete(client)
    assert caught.value.kind == "malformed"


async def test_the_body_is_json_sent_once_per_attempt_with_its_type(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Status(503), Text("ok"))
    prompt = [{"role": "user", "content": "naïve café ☕ \u2028"}]
    async for _ in client.stream("gpt-fake", prompt, max_tokens=50):
        pass
    assert [request["messages"] for request in fake_openai.requests] == [prompt, prompt]
    assert fake_openai.requests[1]["max_completion_tokens"] == 50
    headers = fake_openai.request_headers[1]
    assert headers["Content-Type"] == "application/json"


async def test_chunks_arriving_close_together_are_read_in_one_go(fake_openai: FakeOpenAI) -> None:
    # Ten words 20 ms apart, read at most every 0.1 s: the first word at once, the rest
    # in a few batches (each read wakes the process, which costs more than the chunk).
    model = ModelClient(
        api_key="test", base_url=fake_openai.base_url, timeout_seconds=5, max_attempts=1,
        retry_max_wait_seconds=0.05, batch_seconds=0.1,
    )  # fmt: skip
    words = "one two three four five six seven eight nine ten"
    fake_openai.script(Text(words, interval=0.02))
    deltas = [
        item.text async for item in model.stream("gpt-fake", PROMPT) if isinstance(item, Delta)
    ]
    await model.close()
    assert words.startswith("".join(deltas))
    assert deltas[0] == "one "
    assert len(deltas) <= 5


async def test_a_read_after_a_pause_takes_what_came_before_it_too(
    fake_openai: FakeOpenAI,
) -> None:
    # While the consumer shows the first word (a platform call, 50 ms), the next words
    # reach the stream's buffer; then the socket rests 0.2 s. The read after the rest
    # hands on those words together with all that came during it: one platform call,
    # not one for the words from before the rest and another for the rest.
    model = ModelClient(
        api_key="test", base_url=fake_openai.base_url, timeout_seconds=5, max_attempts=1,
        retry_max_wait_seconds=0.05, batch_seconds=0.2,
    )  # fmt: skip
    words = " ".join(f"w{index}" for index in range(40))
    fake_openai.script(Text(words, interval=0.02))
    deltas = []
    async for item in model.stream("gpt-fake", PROMPT):
        if isinstance(item, Delta):
            deltas.append(item.text)
            await asyncio.sleep(0.05)
    await model.close()
    assert deltas[0] == "w0 "
    assert len(deltas[1].split()) >= 6, deltas  # the ~2 from before the rest, and ~10 more


async def test_an_answer_sent_whole_comes_whole(
    client: ModelClient, fake_openai: FakeOpenAI
) -> None:
    # Sent back to back in 40 chunks (packets microseconds apart): no first words on
    # their own, which a platform would show with a call of their own.
    answer = " ".join(f"word{index}" for index in range(200))
    fake_openai.script(Text(answer, chunks=40))
    items = [item async for item in client.stream("gpt-fake", PROMPT)]
    assert [type(item) for item in items] == [Completion]
    assert isinstance(items[0], Completion) and items[0].text == answer


@pytest.mark.parametrize("code", [300, 302])  # a redirect the client cannot follow
async def test_a_status_that_is_not_success_is_an_error_not_an_empty_answer(
    client: ModelClient, fake_openai: FakeOpenAI, code: int
) -> None:
    fake_openai.script(Status(code))
    with pytest.raises(ModelError) as caught:
        await complete(client)
    assert caught.value.kind == "wrong_url"  # a web page's redirect, not the chat API
    assert str(code) in str(caught.value)


async def test_a_body_that_cannot_be_encoded_is_a_model_error(client: ModelClient) -> None:
    prompt = [{"role": "user", "content": "half a surrogate: \ud800"}]
    with pytest.raises(ModelError) as caught:
        await complete(client, prompt)
    assert caught.value.kind == "malformed"
