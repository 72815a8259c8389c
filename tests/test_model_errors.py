"""Each model failure names its cause and the setting to fix (bot/model_errors.py),
through the real openai SDK over real sockets."""

from __future__ import annotations

import pytest

from bot.llm import ModelClient, ModelError
from tests.fakes.openai_server import FakeOpenAI, Hang, Status

PROMPT = [{"role": "user", "content": "hi"}]


def client(base_url: str | None, **options: object) -> ModelClient:
    settings: dict[str, object] = {
        "api_key": "t", "base_url": base_url, "timeout_seconds": 1.0, "max_attempts": 1,
        "retry_max_wait_seconds": 0.01,
    } | options  # fmt: skip
    return ModelClient(**settings)  # type: ignore[arg-type]


async def failure(model: ModelClient, name: str = "gpt-fake") -> ModelError:
    try:
        with pytest.raises(ModelError) as raised:
            async for _ in model.stream(name, PROMPT):
                pass
    finally:
        await model.close()
    return raised.value


async def test_no_key_and_no_base_url_fails_at_once_saying_what_to_set() -> None:
    error = await failure(client(None, api_key="", configured=False))
    assert error.kind == "no_key"
    assert "OPENAI_API_KEY" in error.user_message and "OPENAI_BASE_URL" in error.user_message


async def test_a_host_that_does_not_resolve_is_named() -> None:
    error = await failure(client("http://parley-no-such-host.invalid/v1"))
    assert error.kind == "no_host"
    assert "OPENAI_BASE_URL" in error.user_message
    assert "parley-no-such-host.invalid" in str(error)  # the log line has the URL


@pytest.mark.parametrize(
    ("response", "kind", "words"),
    [
        (Status(401), "auth", "OPENAI_API_KEY"),
        (Status(404), "model_missing", "PARLEY_MODEL"),
        (Status(429), "rate_limited", "rate limiting"),
        (Status(503), "unavailable", "unavailable"),
        (Hang(), "timeout", "took too long"),
    ],
)
async def test_each_status_names_its_cause(
    fake_openai: FakeOpenAI, response: Status | Hang, kind: str, words: str
) -> None:
    fake_openai.script(response)
    error = await failure(client(fake_openai.base_url), "gpt-wanted")
    assert error.kind == kind
    assert words in error.user_message
    assert "/reset" not in error.user_message
    assert fake_openai.base_url in str(error) or kind == "timeout"
    if kind == "model_missing":
        assert "gpt-wanted" in error.user_message
