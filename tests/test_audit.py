"""The audit log: admin actions from chat and the CLI, read back as a user reads them
(python -m bot audit, /audit), on both stores."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from bot.commands import BECOME_ADMIN
from bot.messages import ReplyKind
from bot.store import Store, UsageRecord
from bot.store.audit_rows import AuditEntry
from tests.conftest import EngineFactory, collect, final_text, message
from tests.test_usage_cli import cli

ADMIN = "test:root"


async def test_audit_rows_filter_and_only_retention_deletes_them(store: Store) -> None:
    now = time.time()
    rows = [
        AuditEntry(now - 10 * 86400, "slack:UA", "slack", "T1", "C1", "block", "slack:U2"),
        AuditEntry(
            now - 60,
            "slack:UA",
            "slack",
            "T1",
            "C1",
            "limits.set.rpm",
            "slack:U2",
            "20 requests/minute",
            "5 requests/minute",
        ),
        AuditEntry(now - 30, "slack:U3", "slack", "T1", "C1", "moderation.flagged", "violence"),
    ]
    for row in rows:
        await store.add_audit(row)
    assert await store.audit_entries(now - 7 * 86400) == [rows[2], rows[1]]  # newest first
    assert await store.audit_entries(0, user="slack:U2") == [rows[1], rows[0]]
    assert await store.audit_entries(0, action="moderation") == [rows[2]]
    assert await store.audit_entries(0, action="limits.set.rpm") == [rows[1]]
    assert await store.audit_entries(0, action="limits.set.r") == []  # whole names only
    assert await store.audit_entries(0, user="slack:U3", action="block") == []
    assert await store.audit_entries(0, limit=1) == [rows[2]]
    assert await store.prune_audit(now - 7 * 86400) == 1
    assert len(await store.audit_entries(0)) == 2


async def test_alert_claims_are_once_and_spend_sums_by_scope(store: Store) -> None:
    assert await store.claim_alert("warning:daily:2026-12-01:all", 1.0)
    assert not await store.claim_alert("warning:daily:2026-12-01:all", 2.0)
    assert await store.claim_alert("cap:daily:2026-12-01:all", 3.0)
    now = time.time()
    for workspace, user, cost in (("T1", "slack:U1", 0.25), ("T1", "slack:U2", 0.5),
                                  ("T2", "slack:U1", 1.0)):  # fmt: skip
        await store.record_usage(UsageRecord("slack", workspace, "C", user, "m", 10, 5, 0, 0,
                                             cost, 1.0, "ok", now))  # fmt: skip
    assert await store.spend_since(now - 60) == 1.75
    assert await store.spend_since(now - 60, "slack", "T1") == 0.75
    assert await store.spend_since(now + 60) == 0.0
    [own] = await store.user_usage("slack:U2", now - 60)
    assert (own["key"], own["requests"], own["total_tokens"], own["cost_usd"]) == ("m", 1, 15, 0.5)
    await store.record_refusal("slack:U1", "moderation", now)
    assert await store.refusal_counts(now - 1) == {"moderation": 1}


async def test_admin_actions_from_chat_and_cli_appear_in_audit_json(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = make_engine(admins=(ADMIN,))
    for command in ("/limits set bob rpm 5", "/block bob", "/system Be terse.", "/model gpt-4o",
                    "/forget", "/forget confirm", "/limits show"):  # fmt: skip
        reply = await collect(engine, message(command, user="root"))
        assert reply[-1].kind is ReplyKind.FINAL, reply
    result = cli(tmp_path / "parley.db", "limits", "set", "slack:U9", "tpd", "1000")
    assert result.returncode == 0, result.stderr
    result = cli(tmp_path / "parley.db", "audit", "--since", "1d", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["action"] for row in rows] == [
        "limits.set.tpd", "forget", "model", "system", "block", "limits.set.rpm",
    ]  # fmt: skip
    assert set(rows[0]) == {
        "at",
        "actor",
        "platform",
        "workspace",
        "channel",
        "action",
        "target",
        "before",
        "after",
    }
    cli_row, forget, model, system, block, limits = rows
    assert cli_row["actor"].startswith("cli:") and cli_row["target"] == "slack:U9"
    assert "200000 tokens/day" in cli_row["before"] and "1000 tokens/day" in cli_row["after"]
    assert (limits["actor"], limits["target"], limits["platform"], limits["channel"]) == (
        ADMIN, "test:bob", "test", "c1",
    )  # fmt: skip
    assert limits["before"].startswith("unlimited requests/minute")
    assert limits["after"].startswith("5 requests/minute")
    assert "BLOCKED" not in block["before"] and "BLOCKED" in block["after"]
    assert (system["before"], system["after"]) == ("(default)", "Be terse.")
    assert (model["target"], model["before"], model["after"]) == (
        "test:w1:c1",
        "(default)",
        "gpt-4o",
    )
    assert forget["after"].startswith("Deleted ")
    assert rows[0]["at"].endswith("Z") and "T" in rows[0]["at"]
    # Filters, and the other two formats.
    only = json.loads(cli(tmp_path / "parley.db", "audit", "--user", "test:bob",
                          "--format", "json").stdout)  # fmt: skip
    assert [row["action"] for row in only] == ["block", "limits.set.rpm"]
    table = cli(tmp_path / "parley.db", "audit", "--action", "limits").stdout
    assert "limits.set.tpd" in table and "limits.set.rpm" in table and "forget" not in table
    csv_rows = list(csv.DictReader(io.StringIO(cli(tmp_path / "parley.db", "audit",
                                                   "--format", "csv").stdout)))  # fmt: skip
    assert len(csv_rows) == 6 and csv_rows[-1]["after"].startswith("5 requests/minute")
    bad = cli(tmp_path / "parley.db", "audit", "--since", "soon")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


async def test_audit_in_chat_is_for_admins_and_reveals_nothing_to_others(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(admins=(ADMIN,))
    await collect(engine, message("/block mallory", user="root"))
    [refused] = await collect(engine, message("/audit 30d", user="mallory"))
    assert refused.kind is ReplyKind.ERROR and refused.private
    assert refused.text == "Sorry, only Parley admins can use /audit." + BECOME_ADMIN
    shown = final_text(await collect(engine, message("/audit 30d", user="root")))
    assert "block" in shown and "test:mallory" in shown and ADMIN in shown
    quiet = await collect(engine, message("/audit 1m model", user="root"))
    assert "No audit entries" in final_text(quiet)


async def test_non_admin_usage_shows_only_their_own_figures(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(admins=(ADMIN,), tokens_per_day=100_000, requests_per_minute=10)
    for user in ("alice", "bob"):
        await collect(engine, message(f"hello from {user}", user=user))
    alice = final_text(await collect(engine, message("/usage 7d user", user="alice")))
    assert alice.startswith("Your usage over the last 7d:")
    assert "test:bob" not in alice and "bob" not in alice and "TOTAL" not in alice
    used = (await engine.store.today("test:alice", time.time()))[0]
    assert f"{100_000 - used:,} of 100,000 tokens" in alice
    assert "10 requests a minute" in alice
    admin = final_text(await collect(engine, message("/usage 7d user", user="root")))
    assert "test:alice" in admin and "test:bob" in admin


async def test_only_retain_days_deletes_audit_rows(make_engine: EngineFactory) -> None:
    old = AuditEntry(time.time() - 40 * 86400, "test:root", "test", "w1", "c1", "block", "x")
    keeping = make_engine()
    await keeping.store.add_audit(old)
    await collect(keeping, message("hello"))  # the hourly clean-up runs with a message
    assert await keeping.store.audit_entries(0) == [old]
    retaining = make_engine(audit_retain_days=30)
    await collect(retaining, message("hello again"))
    assert await retaining.store.audit_entries(0) == []
