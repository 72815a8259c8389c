"""Shared fixtures: a fake model server, and engines built on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.engine import Engine
from bot.llm import ModelClient
from bot.messages import Message, ReplyEvent, ReplyKind
from bot.store import Store, open_store
from bot.store.sqlite import SqliteStore
from bot.tools.builtins import register_builtins
from bot.tools.registry import Registry
from bot.usage import Prices
from tests.fakes.openai_server import FakeOpenAI
from tests.postgres import postgres_schema_url, postgres_server_url

EngineFactory = Callable[..., Engine]
STORE_KINDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A PostgreSQL server's URL, or the test is skipped saying why there is none."""
    url, problem = postgres_server_url()
    if problem:
        pytest.skip(problem)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections see a fresh, empty schema of their own."""
    with postgres_schema_url(postgres_server) as url:
        yield url


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PARLEY_DB for a fresh database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "parley.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def settings_for_tests(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: a database in tmp_path, fast retries, no limits."""
    base = Settings(
        db_path=str(tmp_path / "parley.db"),
        max_attempts=3,
        retry_max_wait_seconds=0.05,
        timeout_seconds=5.0,
        requests_per_minute=0,
        tokens_per_day=0,
        prices_path="config/prices.toml",
    )
    return replace(base, **overrides)


@pytest.fixture
async def make_engine(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[EngineFactory]:
    """make_engine(**settings) -> an Engine on a database in tmp_path and the fake model."""
    opened: list[Engine] = []

    def build(clock: Callable[[], float] | None = None, **overrides: Any) -> Engine:
        settings = settings_for_tests(tmp_path, **overrides)
        model = ModelClient(
            api_key="test",
            base_url=fake_openai.base_url,
            timeout_seconds=settings.timeout_seconds,
            first_token_seconds=settings.first_token_seconds,
            deadline_seconds=settings.deadline_seconds,
            max_attempts=settings.max_attempts,
            retry_max_wait_seconds=settings.retry_max_wait_seconds,
        )
        registry = Registry()
        register_builtins(registry)
        extra = {"clock": clock} if clock else {}
        engine = Engine(
            settings, SqliteStore(settings.db_path), model, tools=registry,
            prices=Prices.load(settings.prices_path), **extra,
        )  # fmt: skip
        opened.append(engine)
        return engine

    yield build
    for engine in opened:
        await engine.model.close()
        await engine.close()
        await engine.store.close()


def message(text: str, **fields: Any) -> Message:
    defaults: dict[str, Any] = {
        "platform": "test", "workspace": "w1", "channel": "c1", "user": "alice",
    }  # fmt: skip
    return Message(text=text, **(defaults | fields))


async def collect(engine: Engine, msg: Message) -> list[ReplyEvent]:
    return [event async for event in engine.handle(msg)]


def final_text(events: list[ReplyEvent]) -> str:
    """The text the user ends up with: the final answer or the error."""
    for event in reversed(events):
        if event.kind in (ReplyKind.FINAL, ReplyKind.ERROR):
            return event.text
    raise AssertionError(f"no final or error event in {events}")
