"""python -m bot usage and python -m bot limits, as an admin runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.store import UsageRecord
from bot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def cli(database: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PARLEY_DB": str(database)}
    return subprocess.run(
        [sys.executable, "-m", "bot", *arguments],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    store = SqliteStore(path)
    now = time.time()
    rows = [
        ("slack", "T1", "C1", "slack:U1", "gpt-4o-mini", 1000, 100, 0, 0.00021, "ok", now - 60,
         "summary"),
        ("slack", "T1", "C1", "slack:U1", "gpt-4o-mini", 2000, 200, 1536, 0.00042, "ok",
         now - 120, "chat"),
        ("discord", "G1", "9", "discord:7", "local-llama", 500, 50, 0, None, "timeout", now - 180,
         "chat"),
        ("slack", "T1", "C2", "slack:U2", "gpt-4o-mini", 9999, 9, 0, 0.0015, "ok",
         now - 30 * 86400, "chat"),
    ]  # fmt: skip
    for platform, ws, channel, user, model, prompt, completion, cached, cost, status, at, kind in (
        rows
    ):
        await store.record_usage(
            UsageRecord(platform, ws, channel, user, model, prompt, completion, cached, 0, cost,
                        5.0, status, at, kind)
        )  # fmt: skip
    await store.close()
    return path


def test_json_by_user_has_the_documented_shape(database: Path) -> None:
    result = cli(database, "usage", "--since", "7d", "--by", "user", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows == [
        {
            "user": "slack:U1", "requests": 2, "prompt_tokens": 3000, "completion_tokens": 300,
            "total_tokens": 3300, "cost_usd": pytest.approx(0.00063), "errors": 0,
            "cached_tokens": 1536, "cached_share": pytest.approx(0.512),
        },
        {
            "user": "discord:7", "requests": 1, "prompt_tokens": 500, "completion_tokens": 50,
            "total_tokens": 550, "cost_usd": None, "errors": 1, "cached_tokens": 0,
            "cached_share": 0.0,
        },
    ]  # fmt: skip


@pytest.mark.parametrize("by", ["user", "channel", "model", "day", "kind"])
def test_csv_groups(database: Path, by: str) -> None:
    result = cli(database, "usage", "--by", by, "--format", "csv", "--since", "4w")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and set(rows[0]) == {
        by,
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "errors",
        "cached_tokens",
        "cached_share",
    }
    assert sum(int(row["requests"]) for row in rows) == 3  # the 30-day-old row is outside


def test_table_by_kind_shows_summaries_and_the_cached_share(database: Path) -> None:
    result = cli(database, "usage", "--by", "kind")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "cached" in lines["kind"]
    assert lines["chat"].split()[1:5] == ["2", "2500", "1536", "61.4%"]
    assert lines["summary"].split()[1:5] == ["1", "1000", "0", "0.0%"]


def test_table_shows_unknown_cost(database: Path) -> None:
    result = cli(database, "usage", "--by", "model")
    assert "local-llama" in result.stdout and "unknown" in result.stdout


def test_bad_period_is_a_clear_error(database: Path) -> None:
    result = cli(database, "usage", "--since", "lastweek")
    assert result.returncode == 2
    assert "not understood" in result.stderr and "Traceback" not in result.stderr


def test_a_period_past_the_bound_is_a_clear_error(database: Path) -> None:
    result = cli(database, "usage", "--since", "1000000d")
    assert result.returncode == 2
    assert "at most 400 days" in result.stderr and "Traceback" not in result.stderr


def test_limits_set_block_show(database: Path) -> None:
    assert cli(database, "limits", "set", "slack:U1", "rpm", "3").returncode == 0
    assert cli(database, "limits", "block", "discord:7").returncode == 0
    shown = cli(database, "limits", "show").stdout
    assert "slack:U1: 3 requests/minute" in shown
    assert "discord:7" in shown and "BLOCKED" in shown
    bad = cli(database, "limits", "set", "U1", "rpm", "3")
    assert bad.returncode == 2 and "platform:user" in bad.stderr
