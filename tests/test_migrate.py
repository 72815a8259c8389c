"""python -m bot migrate: a team's SQLite history moves into PostgreSQL, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.messages import ConversationKey
from bot.store import UserLimits, open_store
from tests.conftest import EngineFactory, collect, message
from tests.fakes.openai_server import FakeOpenAI, Text

ROOT = Path(__file__).resolve().parent.parent


def migrate(source: Path, target: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PARLEY_CONFIG": "config/parley.toml"}
    return subprocess.run(
        [sys.executable, "-m", "bot", "migrate", "--from", str(source), "--to", target],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def copied(output: str) -> dict[str, tuple[int, int]]:
    rows = [line.split() for line in output.splitlines()[1:] if line and line[0].islower()]
    return {row[0]: (int(row[1].replace(",", "")), int(row[2].replace(",", ""))) for row in rows}


async def test_history_settings_limits_and_usage_arrive_and_a_rerun_copies_nothing(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, postgres_url: str, tmp_path: Path
) -> None:
    engine = make_engine(admins=("test:alice",))
    fake_openai.script(Text("first answer"), Text("second answer"))
    await collect(engine, message("first question", dedupe_keys=("ev:1",)))
    await collect(engine, message("/reset"))
    await collect(engine, message("second question"))
    await collect(engine, message("/model gpt-test"))
    await collect(engine, message("/block test:mallory"))
    result = migrate(tmp_path / "parley.db", postgres_url)
    assert result.returncode == 0, result.stderr
    counts = copied(result.stdout)
    assert counts["messages"] == (4, 4) and counts["usage"] == (2, 2)
    assert counts["limits"] == (1, 1) and counts["channel_settings"] == (1, 1)

    again = migrate(tmp_path / "parley.db", postgres_url)
    assert again.returncode == 0 and all(new == 0 for _, new in copied(again.stdout).values())

    store = await open_store(postgres_url)
    try:
        key = message("x").conversation
        window = await store.recent(key, 10)  # the reset still holds: ids were kept
        assert [m.content for m in window.messages] == ["second question", "second answer"]
        assert await store.count_messages(key) == 4
        assert (await store.user_limits("test:mallory", UserLimits())).blocked
        assert (await store.channel_settings("test", "w1", "c1"))["model"] == "gpt-test"
        assert not await store.claim_delivery(("ev:1",))  # a late retry is still known
        new_id = await store.append(ConversationKey("test", "w1", "c2"), "user", "later", 1)
        assert new_id > max(m.id for m in window.messages)  # numbered after the copies
    finally:
        await store.close()
    refused = migrate(tmp_path / "parley.db", postgres_url)  # the target moved on since
    assert refused.returncode == 2 and "new, empty database" in refused.stderr


def test_wrong_arguments_are_one_line(tmp_path: Path) -> None:
    result = migrate(tmp_path / "missing.db", "postgresql://u@127.0.0.1:1/x")
    assert result.returncode == 2 and "no such file" in result.stderr
    (tmp_path / "a.db").write_bytes(b"")
    result = migrate(tmp_path / "a.db", "mysql://u@h/db")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
