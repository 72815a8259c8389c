"""Access lists: who Parley answers where, from config, /access and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.access import NO_DMS, NOT_FOR_YOU, NOT_HERE
from bot.engine import Engine
from bot.llm import ModelClient
from bot.messages import Message, ReplyKind
from bot.store import Store
from tests.conftest import EngineFactory, collect, final_text, message, settings_for_tests
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


def said(events: list[Any]) -> list[str]:
    return [e.text for e in events if e.kind in (ReplyKind.FINAL, ReplyKind.ERROR)]


# -- the store, on both databases ------------------------------------------------------


async def test_store_keeps_one_list_per_target(store: Store) -> None:
    await store.set_access("allow", "user", "slack:U1")
    await store.set_access("block", "channel", "slack:T1:C1")
    await store.set_access("block", "user", "slack:U1")  # moves it
    assert await store.access_entries() == [
        ("block", "channel", "slack:T1:C1"),
        ("block", "user", "slack:U1"),
    ]
    assert await store.remove_access("user", "slack:U1") is True
    assert await store.remove_access("user", "slack:U1") is False
    assert await store.access_entries() == [("block", "channel", "slack:T1:C1")]


async def test_store_grants_a_refusal_notice_once(store: Store) -> None:
    assert await store.claim_access_notice("test:w1:c1|channel") is True
    assert await store.claim_access_notice("test:w1:c1|channel") is False
    assert await store.claim_access_notice("test:w1:c2|channel") is True


# -- the engine ----------------------------------------------------------------------


async def test_blocked_user_gets_no_model_call_and_hears_why_once(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(access_block_users=("test:mallory",))
    first = await collect(engine, message("hi", user="mallory"))
    second = await collect(engine, message("hello?", user="mallory"))
    assert said(first) == [NOT_FOR_YOU]
    assert said(second) == []  # said once per channel, then silence
    assert fake_openai.request_count == 0
    assert final_text(await collect(engine, message("hi", user="alice"))) == "echo: hi"
    metrics = engine.metrics.exposition().decode()
    assert 'parley_access_refusals_total{reason="user"} 2.0' in metrics


async def test_channel_outside_the_allow_list_gets_no_model_call(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(access_allow_channels=("test:w1:c1",))
    assert said(await collect(engine, message("hi", channel="c2"))) == [NOT_HERE]
    assert fake_openai.request_count == 0
    assert final_text(await collect(engine, message("hi", channel="c1"))) == "echo: hi"
    # Another platform is not named by the allow list, so it is not restricted by it.
    assert final_text(await collect(engine, message("yo", platform="web"))) == "echo: yo"


async def test_silent_refusal_says_nothing(make_engine: EngineFactory) -> None:
    engine = make_engine(access_block_channels=("test:w1:c1",), access_refusal="silent")
    assert await collect(engine, message("hi")) == []
    assert await collect(engine, message("/help")) == []


async def test_admins_pass_every_list(make_engine: EngineFactory) -> None:
    engine = make_engine(
        access_block_users=("test:boss",), access_allow_channels=("test:w1:other",),
        admins=("test:boss",),
    )  # fmt: skip
    assert final_text(await collect(engine, message("hi", user="boss"))) == "echo: hi"


@pytest.mark.parametrize(
    ("settings", "fields", "expected"),
    [
        ({"access_dms": False}, {"is_direct": True}, NO_DMS),
        ({"access_block_roles": ("test:w1:r9",)}, {"roles": ("r1", "r9")}, NOT_FOR_YOU),
        ({"access_allow_roles": ("test:w1:r1",)}, {"roles": ("r2",)}, NOT_FOR_YOU),
        ({"access_allow_roles": ("test:w1:r1",)}, {"roles": ("r1",)}, "echo: hi"),
        # A thread under a blocked channel, a channel under an allowed category.
        ({"access_block_channels": ("test:w1:p1",)}, {"parent_channel": "p1"}, NOT_HERE),
        ({"access_allow_channels": ("test:w1:cat",)}, {"category": "cat"}, "echo: hi"),
        # Channel lists do not apply to direct messages.
        ({"access_allow_channels": ("test:w1:cx",)}, {"is_direct": True}, "echo: hi"),
    ],
)
async def test_roles_threads_categories_and_dms(
    make_engine: EngineFactory, settings: dict[str, Any], fields: dict[str, Any], expected: str
) -> None:
    engine = make_engine(**settings)
    assert said(await collect(engine, message("hi", **fields))) == [expected]


async def test_access_changes_apply_to_the_next_message_in_every_process(
    store_url: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Two engines (two replicas) on one database: one admin's /access, the other's
    next message."""
    engines = [await _engine(store_url, tmp_path, fake_openai) for _ in range(2)]
    try:
        one, two = engines
        admin = {"user": "boss"}
        assert final_text(await collect(two, message("hi", user="eve"))) == "echo: hi"
        reply = await collect(one, message("/access block user <@eve>", **admin))
        assert final_text(reply) == "Done: user test:eve is on the block list."
        assert said(await collect(two, message("again", user="eve"))) == [NOT_FOR_YOU]
        await collect(one, message("/access remove user test:eve", **admin))
        await collect(one, message("/access allow channel here", **admin))
        assert final_text(await collect(two, message("back", user="eve"))) == "echo: back"
        assert said(await collect(two, message("x", user="eve", channel="c9"))) == [NOT_HERE]
        shown = final_text(await collect(two, message("/access show", **admin)))
        assert "allow channels: test:w1:c1" in shown
        audited = final_text(await collect(two, message("/audit 1d access", **admin)))
        assert "access.block" in audited and "access.allow" in audited
    finally:
        for engine in engines:
            await engine.close()
            await engine.model.close()
            await engine.store.close()


async def _engine(store_url: str, tmp_path: Path, fake_openai: FakeOpenAI) -> Engine:
    from bot.store import open_store

    settings = replace(settings_for_tests(tmp_path), admins=("test:boss",))
    model = ModelClient(
        api_key="t", base_url=fake_openai.base_url, max_attempts=1, timeout_seconds=5.0,
        retry_max_wait_seconds=0.05,
    )  # fmt: skip
    return Engine(settings, await open_store(store_url), model)


async def test_access_command_refuses_non_admins_revealing_nothing(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(access_block_users=("test:secret-person",))
    events = await collect(engine, message("/access show"))
    [refusal] = said(events)
    assert refusal.startswith("Sorry, only Parley admins can use /access.")
    assert "secret-person" not in refusal
    assert all(e.private for e in events)


async def test_access_command_explains_a_bad_id(make_engine: EngineFactory) -> None:
    engine = make_engine(admins=("test:alice",))
    text = final_text(await collect(engine, message("/access block role slack:x:y")))
    assert "Roles are Discord's" in text and "Usage: /access" in text


# -- the CLI, as an admin meets it ---------------------------------------------------


def _cli(db: Path, *words: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _bot(db, "access", *words, config=config)


def _bot(db: Path, *words: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PARLEY_DB": str(db), "HOME": str(db.parent)}
    if config is not None:
        env["PARLEY_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "bot", *words], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_cli_changes_reach_a_running_engine(
    make_engine: EngineFactory, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    db = Path(engine.settings.db_path)
    blocked = _cli(db, "block", "channel", "test:w1:c1")
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.strip() == "Done: channel test:w1:c1 is on the block list."
    assert said(await collect(engine, message("hi"))) == [NOT_HERE]
    config = tmp_path / "parley.toml"
    config.write_text('[access]\nblock_users = ["slack:U7"]\n')
    shown = _cli(db, "show", config=config)
    assert "block users: slack:U7 (config)" in shown.stdout
    assert "block channels: test:w1:c1" in shown.stdout
    removed = _cli(db, "remove", "channel", "test:w1:c1")
    assert removed.returncode == 0
    audit = _bot(db, "audit", "--action", "access", "--format", "json")
    rows = json.loads(audit.stdout)
    assert sorted(row["action"] for row in rows) == ["access.block", "access.remove"]
    assert final_text(await collect(engine, message("hi"))) == "echo: hi"
    assert fake_openai.request_count == 1


def test_cli_refuses_a_malformed_id_in_one_line(tmp_path: Path) -> None:
    result = _cli(tmp_path / "x.db", "allow", "user", "U123")
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: A user id looks like slack:U123, not 'U123'."
    assert "Traceback" not in result.stderr


def test_message_payload_keeps_access_fields() -> None:
    original = Message("discord", "g", "c", "u", "hi", roles=("r1",), category="k",
                       parent_channel="p", is_direct=False)  # fmt: skip
    assert Message.from_payload(original.to_payload()) == original


async def test_access_version_changes_with_every_change(store: Store) -> None:
    seen = {await store.access_version()}
    for change in (
        store.set_access("allow", "user", "slack:U1"),
        store.set_access("allow", "user", "slack:U2"),
        store.set_access("block", "user", "slack:U1"),  # a move
        store.remove_access("user", "slack:U2"),
    ):
        await change
        seen.add(await store.access_version())
    assert len(seen) == 5
