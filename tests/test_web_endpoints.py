"""GET /health and GET /metrics over a real socket, after real conversations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pytest
from aiohttp import ClientSession
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from adapters.web import create
from bot.http import HEALTH_CACHE_SECONDS
from bot.runner import create_adapter
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import Call, FakeOpenAI, Status, Text, ToolCalls
from tests.test_web_helpers import serve


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with ClientSession() as client, client.get(url) as response:
        return response.status, await response.json()


async def test_health_reports_database_adapters_and_last_success(
    make_engine: EngineFactory,
) -> None:
    engine, now = make_engine(), [100.0]
    async with serve(engine, adapters={"slack": lambda: True}, clock=lambda: now[0]) as url:
        status, before = await get_json(url + "/health")
        assert status == 200
        assert before == {
            "status": "ok", "database_writable": True, "database": "ok",
            "adapters": {"slack": True}, "last_model_success": None,
        }  # fmt: skip
        await collect(engine, message("hello"))
        now[0] += HEALTH_CACHE_SECONDS  # past the cache
        status, after = await get_json(url + "/health")
    assert status == 200
    assert isinstance(after["last_model_success"], str)
    assert datetime.fromisoformat(after["last_model_success"]).tzinfo is not None


async def test_health_is_503_when_an_adapter_is_not_connected(make_engine: EngineFactory) -> None:
    adapters = {"slack": lambda: True, "discord": lambda: False}
    async with serve(make_engine(), adapters=adapters) as url:
        status, report = await get_json(url + "/health")
    assert status == 503
    assert report["status"] == "not ready"
    assert report["adapters"] == {"slack": True, "discord": False}


async def test_health_follows_the_web_adapter_lifecycle(make_engine: EngineFactory) -> None:
    engine = make_engine()
    adapter = create(engine, engine.settings)
    assert not adapter.connected()  # not started yet: not ready
    async with serve(engine, adapter) as url:
        status, report = await get_json(url + "/health")
        assert (status, report["adapters"]) == (200, {"web": True})
    assert not adapter.connected()


async def test_a_flood_of_health_probes_writes_once_a_second(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, now, probes = make_engine(), [100.0], []
    writable = engine.store.writable

    async def counted() -> bool:
        probes.append(now[0])
        return await writable()

    monkeypatch.setattr(engine.store, "writable", counted)
    connected = [True]
    adapters = {"slack": lambda: connected[0]}
    async with serve(engine, adapters=adapters, clock=lambda: now[0]) as url:
        for _ in range(20):
            assert (await get_json(url + "/health"))[0] == 200
        connected[0] = False  # not seen until the cached report is a second old
        now[0] += HEALTH_CACHE_SECONDS - 0.01
        assert (await get_json(url + "/health"))[0] == 200
        now[0] += 0.01
        status, report = await get_json(url + "/health")
    assert (status, report["adapters"]) == (503, {"slack": False})
    assert probes == [100.0, 100.0 + HEALTH_CACHE_SECONDS]


def test_the_runner_finds_the_web_adapter(make_engine: EngineFactory) -> None:
    engine = make_engine()
    adapter = create_adapter("web", engine, engine.settings)
    assert adapter.name == "web"


# --- /metrics ------------------------------------------------------------------------


def value(families: Iterable[Metric], sample_name: str, **labels: str) -> float:
    for family in families:
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {sample_name}{labels}")


@pytest.fixture
async def metrics_text(make_engine: EngineFactory, fake_openai: FakeOpenAI) -> str:
    """GET /metrics after scripted conversations on several platforms."""
    engine, fake = make_engine(), fake_openai
    await engine.store.set_user_limit("test:mallory", "blocked", 1)
    await engine.store.set_user_limit("test:bob", "requests_per_minute", 1)
    fake.script(
        Text("first", prompt_tokens=11, completion_tokens=7, cached_tokens=3),
        Text("second", prompt_tokens=5, completion_tokens=2),
        Status(500), Status(500), Status(500),
        ToolCalls([Call("calculate", {"expression": "6*7"})], prompt_tokens=20,
                  completion_tokens=4),
        Text("It is 42.", prompt_tokens=30, completion_tokens=1),
        Text("hi bob", prompt_tokens=1, completion_tokens=1),
    )  # fmt: skip
    assert final_text(await collect(engine, message("a", platform="slack"))) == "first"
    assert final_text(await collect(engine, message("b", platform="discord"))) == "second"
    failed = await collect(engine, message("c", platform="slack"))
    assert "unavailable" in final_text(failed)
    assert final_text(await collect(engine, message("6*7?", platform="web"))) == "It is 42."
    assert final_text(await collect(engine, message("hi", user="bob"))) == "hi bob"
    await collect(engine, message("again", user="bob"))  # over bob's 1 a minute
    await collect(engine, message("let me in", user="mallory"))  # blocked
    assert fake.pending == 0
    async with serve(engine) as url, ClientSession() as client:
        async with client.get(url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return await response.text()


def test_messages_are_counted_by_platform(metrics_text: str) -> None:
    families = list(text_string_to_metric_families(metrics_text))
    counts = {
        platform: value(families, "parley_messages_total", platform=platform)
        for platform in ("slack", "discord", "web", "test")
    }
    assert counts == {"slack": 2, "discord": 1, "web": 1, "test": 3}


def test_model_calls_are_counted_by_status(metrics_text: str) -> None:
    families = list(text_string_to_metric_families(metrics_text))
    # ok: first, second, the tool round and its answer, bob's first; 500 x3 is one call.
    assert value(families, "parley_model_calls_total", status="ok") == 5
    assert value(families, "parley_model_calls_total", status="unavailable") == 1


def test_tokens_are_what_the_model_reported(metrics_text: str) -> None:
    families = list(text_string_to_metric_families(metrics_text))
    assert value(families, "parley_tokens_total", kind="prompt") == 11 + 5 + 20 + 30 + 1
    assert value(families, "parley_tokens_total", kind="completion") == 7 + 2 + 4 + 1 + 1
    assert value(families, "parley_tokens_total", kind="cached") == 3


def test_refusals_and_tool_calls_are_counted(metrics_text: str) -> None:
    families = list(text_string_to_metric_families(metrics_text))
    assert value(families, "parley_rate_limit_refusals_total", limit="blocked") == 1
    assert value(families, "parley_rate_limit_refusals_total", limit="requests_per_minute") == 1
    assert value(families, "parley_tool_calls_total", tool="calculate", status="ok") == 1


def test_histograms_are_exposed(metrics_text: str) -> None:
    families = {family.name: family for family in text_string_to_metric_families(metrics_text)}
    for name in (
        "parley_engine_seconds",
        "parley_first_token_seconds",
        "parley_model_call_seconds",
    ):
        assert families[name].type == "histogram"
    assert value(families.values(), "parley_engine_seconds_count") == 7  # every message
    assert value(families.values(), "parley_model_call_seconds_count") == 6
    assert value(families.values(), "parley_first_token_seconds_count") == 5  # not the 500
    assert value(families.values(), "parley_model_calls_in_flight") == 0
    assert value(families.values(), "parley_cost_usd_total") > 0


METRICS_TOKEN = "metrics-secret-for-tests"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {METRICS_TOKEN}x"}, 401),
        ({"Authorization": f"Basic {METRICS_TOKEN}"}, 401),
        ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200),
        ({"Authorization": f"bearer  {METRICS_TOKEN}"}, 200),
    ],
)
async def test_metrics_token_guards_metrics_but_not_health(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch,
    headers: dict[str, str], status: int,
) -> None:  # fmt: skip
    monkeypatch.setenv("PARLEY_METRICS_TOKEN", METRICS_TOKEN)
    engine = make_engine()
    await collect(engine, message("spend something"))
    async with serve(engine) as url, ClientSession() as client:
        async with client.get(url + "/metrics", headers=headers) as response:
            assert response.status == status
            body = await response.text()
            challenge = response.headers.get("WWW-Authenticate", "")
        assert (await get_json(url + "/health"))[0] == 200  # probes need no token
    assert ("parley_tokens_total" in body) is (status == 200)
    assert challenge.startswith("Bearer") is (status == 401)
    assert METRICS_TOKEN not in body
