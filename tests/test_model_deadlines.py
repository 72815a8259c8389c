"""The model call's deadlines against the fake server: a dripping stream is cut at the
call's deadline, a silent one at the first-token deadline, and retries never stretch
the call past its deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bot.llm import USER_MESSAGES, Completion, Delta, ModelClient, ModelError
from bot.messages import ReplyKind
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI, Hang, Stall, Text

PROMPT = [{"role": "user", "content": "hi"}]
# Forty words a fifth of a second apart: 8 s in all, each chunk far inside the
# transport's own timeout, so only the call's deadline can stop it.
DRIP = Text("drip " * 40, interval=0.2)

ClientFactory = Callable[..., ModelClient]


@pytest.fixture
async def make_client(fake_openai: FakeOpenAI) -> AsyncIterator[ClientFactory]:
    made: list[ModelClient] = []

    def build(**options: float) -> ModelClient:
        settings: dict[str, float] = {
            "timeout_seconds": 30, "max_attempts": 1, "retry_max_wait_seconds": 0.01,
        }  # fmt: skip
        client = ModelClient(api_key="t", base_url=fake_openai.base_url, **settings | options)
        made.append(client)
        return client

    yield build
    for client in made:
        await client.close()


async def stream_all(client: ModelClient) -> tuple[str, Completion | None, ModelError | None]:
    """What the caller got: the text streamed, the Completion, the error."""
    streamed = ""
    try:
        async for item in client.stream("gpt-fake", PROMPT):
            if isinstance(item, Delta):
                streamed += item.text
            else:
                return streamed, item, None
    except ModelError as error:
        return streamed, None, error
    raise AssertionError("the stream ended without a Completion or an error")


async def test_a_dripping_stream_is_cut_at_the_calls_deadline(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(DRIP)
    client = make_client(timeout_seconds=5, deadline_seconds=1, max_attempts=3)
    streamed, completion, error = await stream_all(client)
    assert completion is None and error is not None
    assert error.kind == "timeout"
    assert streamed and DRIP.content.startswith(streamed) and streamed != DRIP.content
    assert fake_openai.request_count == 1  # text reached the user: never retried


async def test_the_user_is_told_the_model_took_too_long(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(DRIP)
    engine = make_engine(deadline_seconds=1.0)
    events = await collect(engine, message("tell me slowly"))
    assert final_text(events) == USER_MESSAGES["timeout"]
    assert [e for e in events if e.kind is ReplyKind.DELTA], "it streamed until cut"
    assert not [e for e in events if e.kind is ReplyKind.FINAL]
    # The cut answer is not stored as if it were whole.
    window = await engine.store.recent(message("x").conversation, 10)
    assert [m.role for m in window.messages] == ["user"]


async def test_a_silent_stream_hits_the_first_token_deadline(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    # The headers and an empty first chunk, then silence: without a first-token
    # deadline only the transport's 30 s timeout or the server's hang-up ends it.
    fake_openai.script(Stall(3))
    client = make_client(first_token_seconds=0.3, deadline_seconds=20)
    _, completion, error = await stream_all(client)
    assert completion is None and error is not None
    assert error.kind == "timeout" and "first token" in str(error)


async def test_a_late_first_token_is_retried_within_the_deadline(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    # The stall outlasts the call's deadline: only giving up the first try early, and
    # trying again, answers in time.
    fake_openai.script(Stall(3), Text("on the second try"))
    client = make_client(first_token_seconds=0.3, deadline_seconds=2, max_attempts=2)
    streamed, completion, error = await stream_all(client)
    assert error is None and completion is not None
    assert completion.text == "on the second try" and completion.text.startswith(streamed)
    assert completion.attempts == 2


async def test_retries_do_not_multiply_the_deadline(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    # Each try dies on the transport's 0.3 s timeout; ten of them would take 3 s and
    # more, the call is allowed 1 s in all.
    fake_openai.script(*[Hang(5)] * 10)
    client = make_client(timeout_seconds=0.3, deadline_seconds=1, max_attempts=10)
    _, completion, error = await stream_all(client)
    assert completion is None and error is not None
    assert error.kind == "timeout"
    assert 2 <= fake_openai.request_count < 10


async def test_a_hang_before_the_headers_is_cut_at_the_deadline(
    make_client: ClientFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Hang(10), Text("too late"))
    client = make_client(timeout_seconds=30, deadline_seconds=0.5, max_attempts=2)
    _, completion, error = await stream_all(client)
    assert completion is None and error is not None
    assert error.kind == "timeout" and "0.5 s" in str(error)
    assert fake_openai.request_count == 1  # the deadline is final: no retry after it
