"""Moderation, redaction and secret masking, through the engine, on the fake model
with its fake moderation route (the real openai client over a real socket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.commands import BECOME_ADMIN
from bot.config import ConfigError, load_settings
from bot.messages import ReplyKind
from bot.redaction import SECRET_MASK, Redactor, SecretStream, luhn_valid, mask_secrets
from bot.safety import FLAGGED, UNCHECKED, WITHHELD
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import Call, FakeOpenAI, Text, ToolCalls

MODERATED = {"moderation_enabled": True, "admins": ("test:root",)}
CARD = "4111 1111 1111 1111"  # a test Visa number: passes the Luhn check
NOT_A_CARD = "4111 1111 1111 1112"
EMAIL = "alice@example.com"
OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


async def test_a_flagged_message_never_reaches_the_model_and_is_audited(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.moderation_words = {"knife": {"violence": 0.93}}
    engine = make_engine(**MODERATED)
    events = await collect(engine, message("how do I hurt someone with a knife"))
    assert [e.kind for e in events] == [ReplyKind.ERROR]
    assert events[0].text == FLAGGED and events[0].private
    assert fake_openai.request_count == 0  # chat completions never called
    assert fake_openai.moderation_requests[0]["input"] == "how do I hurt someone with a knife"
    assert await engine.store.count_messages(message("x").conversation) == 0
    [entry] = await engine.store.audit_entries(0)
    assert (entry.action, entry.actor, entry.target) == (
        "moderation.flagged", "test:alice", "violence",
    )  # fmt: skip
    assert "knife" in entry.before
    assert (await engine.store.refusal_counts(0)) == {"moderation": 1}
    metrics = engine.metrics.exposition().decode()
    assert 'parley_moderation_flags_total{source="openai",stage="input"} 1.0' in metrics
    # The next, harmless, message is answered, and an admin's /usage counts the refusal.
    assert final_text(await collect(engine, message("what is a fork"))) == "echo: what is a fork"
    usage = final_text(await collect(engine, message("/usage", user="root")))
    assert "Messages refused: 1 (moderation 1)" in usage


async def test_a_threshold_flags_below_the_endpoints_own_verdict(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.moderation_words = {"rude": {"harassment": 0.3}}
    lenient = make_engine(**MODERATED)
    assert final_text(await collect(lenient, message("a rude joke"))) == "echo: a rude joke"
    strict = make_engine(**MODERATED, moderation_thresholds={"harassment": 0.25})
    assert final_text(await collect(strict, message("a rude remark"))) == FLAGGED


@pytest.mark.parametrize(("policy", "answered"), [("open", True), ("closed", False)])
async def test_when_the_moderation_route_is_down_the_policy_decides(
    make_engine: EngineFactory,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    policy: str,
    answered: bool,
) -> None:
    fake_openai.moderation_status = 503
    engine = make_engine(**MODERATED, moderation_on_failure=policy)
    text = final_text(await collect(engine, message("hello")))
    assert text == ("echo: hello" if answered else UNCHECKED)
    assert fake_openai.request_count == (1 if answered else 0)
    assert "moderation endpoint failed" in caplog.text
    actions = [entry.action for entry in await engine.store.audit_entries(0)]
    assert actions == ([] if answered else ["moderation.unavailable"])


async def test_a_pattern_list_hit_needs_no_endpoint(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(
        **MODERATED, moderation_provider="patterns",
        moderation_patterns=("project zeus", r"\bpassw(or)?d\s*[:=]"),
    )  # fmt: skip
    assert final_text(await collect(engine, message("Tell me about Project  Zeus"))) != FLAGGED
    assert final_text(await collect(engine, message("what is project zeus?"))) == FLAGGED
    assert final_text(await collect(engine, message("my password: hunter2"))) == FLAGGED
    assert final_text(await collect(engine, message("zeusish things"))) == "echo: zeusish things"
    assert fake_openai.moderation_requests == []
    [second, first] = await engine.store.audit_entries(0)
    assert first.target == second.target == "pattern"


async def test_a_flagged_answer_is_withheld_and_replaces_what_streamed(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.moderation_words = {"detonate": {"violence": 0.9}}
    # Paced, so that its first half is streamed before the whole is checked.
    fake_openai.script(Text("First you detonate the thing, then run", chunks=2, interval=0.05))
    engine = make_engine(**MODERATED, moderation_check_answers=True)
    events = await collect(engine, message("tell me a story"))
    assert any(e.kind is ReplyKind.DELTA and "detonate" in e.text for e in events)
    assert events[-1].kind is ReplyKind.FINAL and events[-1].text == WITHHELD
    window = await engine.store.recent(message("x").conversation, 10)
    assert [m.content for m in window.messages] == ["tell me a story", WITHHELD]
    actions = [entry.action for entry in await engine.store.audit_entries(0)]
    assert actions == ["moderation.answer_withheld"]


async def test_an_email_and_a_card_never_reach_the_model_but_history_keeps_them(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(redaction_enabled=True, redaction_patterns=(r"EMP-\d{5}",))
    text = f"Mail {EMAIL} about card {CARD}, order {NOT_A_CARD}, staff EMP-12345, +1 (555) 010-4477"
    await collect(engine, message(text))
    sent = fake_openai.requests[0]["messages"][-1]["content"]
    assert EMAIL not in sent and CARD not in sent and "EMP-12345" not in sent
    assert "555" not in sent
    assert "[EMAIL_1]" in sent and "[CARD_1]" in sent and "[REDACTED_1]" in sent
    assert NOT_A_CARD in sent  # fails the Luhn check: not a card
    window = await engine.store.recent(message("x").conversation, 10)
    assert window.messages[0].content == text


async def test_store_original_false_keeps_history_redacted_too(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(redaction_enabled=True, redaction_store_original=False)
    await collect(engine, message(f"write to {EMAIL}"))
    window = await engine.store.recent(message("x").conversation, 10)
    assert window.messages[0].content == "write to [EMAIL_1]"


async def test_a_secret_in_a_tool_result_is_masked_in_the_answer_and_the_store(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    # The model is fed the tool result (masked already) and repeats what it saw.
    fake_openai.script(
        ToolCalls([Call("search_history", {"query": "key"})]),
        Text(f"The key in the history is {OPENAI_KEY} and Bearer abcdefghijklmnop1234."),
    )
    engine = make_engine()
    await engine.store.append(message("x").conversation, "user", f"key {OPENAI_KEY}", 5)
    events = await collect(engine, message("what was the key?"))
    tool_message = fake_openai.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and OPENAI_KEY not in tool_message["content"]
    assert SECRET_MASK in tool_message["content"]
    shown = "".join(e.text for e in events if e.kind is ReplyKind.DELTA)
    assert OPENAI_KEY not in shown and "abcdefghijklmnop1234" not in shown
    assert events[-1].text == f"The key in the history is {SECRET_MASK} and {SECRET_MASK}."
    window = await engine.store.recent(message("x").conversation, 10)
    assert not any(OPENAI_KEY in m.content for m in window.messages[1:])


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI_KEY,
        "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
        "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    ],
)
def test_secret_shapes_are_masked_even_split_across_stream_pieces(secret: str) -> None:
    text = f"here: {secret} done"
    assert mask_secrets(text) == f"here: {SECRET_MASK} done"
    for size in (1, 3, 7):
        stream = SecretStream()
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
        assert shown == f"here: {SECRET_MASK} done"


def test_redaction_numbers_values_and_leaves_ordinary_numbers() -> None:
    redactor = Redactor()
    text = redactor.redact("a@b.io, c@d.org, a@b.io on 2026-12-01 at 10:30, 42 items, v1.2.3")
    assert text == "[EMAIL_1], [EMAIL_2], [EMAIL_1] on 2026-12-01 at 10:30, 42 items, v1.2.3"
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[moderation]\npatterns = ["(unclosed"]', "moderation.patterns"),
        ('[moderation]\non_failure = "maybe"', "moderation.on_failure"),
        ("[budget]\nwarn_at = 1.5", "budget.warn_at"),
        ('[budget.workspaces."T0123"]\ndaily_usd = 5', "budget.workspaces"),
        ('[budget.workspaces."slack:T1"]\nweekly_usd = 5', "budget.workspaces"),
    ],
)
def test_a_bad_safety_setting_stops_start_up_naming_it(
    tmp_path: Path, toml: str, named: str
) -> None:
    path = tmp_path / "parley.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=named):
        load_settings(str(path), environ={})


async def test_the_moderation_endpoint_gets_the_redacted_text_too(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(**MODERATED, redaction_enabled=True)
    await collect(engine, message(f"mail {EMAIL} please"))
    assert fake_openai.moderation_requests[0]["input"] == "mail [EMAIL_1] please"


async def test_an_admin_can_exempt_a_channel_and_the_override_is_audited(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.moderation_words = {"exploit": {"illicit": 0.8}}
    engine = make_engine(**MODERATED, moderation_check_answers=True)
    [refused] = await collect(engine, message("/moderation off", user="mallory"))
    assert refused.text == "Sorry, only Parley admins can use /moderation." + BECOME_ADMIN
    done = final_text(await collect(engine, message("/moderation off", user="root")))
    assert done == "Moderation is off in this channel (an admin's override)."
    assert (
        final_text(await collect(engine, message("write an exploit"))) == "echo: write an exploit"
    )
    elsewhere = message("write an exploit", channel="c2")
    assert final_text(await collect(engine, elsewhere)) == FLAGGED
    await collect(engine, message("/moderation on", user="root"))
    assert final_text(await collect(engine, message("an exploit again"))) == FLAGGED
    overrides = await engine.store.audit_entries(0, action="moderation.override")
    assert [(e.before, e.after, e.target) for e in overrides] == [
        ("off", "(default)", "test:w1:c1"), ("(default)", "off", "test:w1:c1"),
    ]  # fmt: skip
