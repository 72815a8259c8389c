"""Exactly once through crashes and shutdowns, as a team meets it: a Parley process
killed mid-answer is restarted and the question is answered once, late, with an
apology; SIGTERM lets the answer in progress finish and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bot.engine import Engine
from bot.messages import ConversationKey, Message
from bot.store import UserLimits
from tests.conftest import EngineFactory, collect, message
from tests.fakes import eventually
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, EventSender, FakeSlack
from tests.replicas import WAIT, healthy
from tests.slack_helpers import SECRET, TOKEN
from tests.test_run import free_port
from tests.test_web_helpers import browser_like

ROOT = Path(__file__).resolve().parent.parent
SLOW = "one two three four five six seven eight"


def start(arguments: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *arguments], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip


async def exit_code(process: subprocess.Popen[bytes], within: float = 30.0) -> int:
    for _ in range(int(within / 0.05)):
        if process.poll() is not None:
            return process.returncode
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("Parley did not exit")


def environment(folder: Path, model: FakeOpenAI, port: int, **extra: str) -> dict[str, str]:
    config = folder / "parley.toml"
    config.write_text(
        "[store]\nlease_seconds = 1.0\n[recovery]\nmax_age = 600\n[shutdown]\ngrace_seconds = 20\n"
    )
    return {
        "PATH": os.environ.get("PATH", ""), "HOME": str(folder), "PORT": str(port),
        "PARLEY_CONFIG": str(config), "PARLEY_DB": str(folder / "parley.db"),
        "OPENAI_API_KEY": "test", "OPENAI_BASE_URL": model.base_url,
        "PARLEY_RATE_PER_MINUTE": "0", "PARLEY_TOKENS_PER_DAY": "0", **extra,
    }  # fmt: skip


def slack_env(folder: Path, model: FakeOpenAI, slack: FakeSlack, port: int) -> dict[str, str]:
    return environment(
        folder, model, port, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
        PARLEY_SLACK_API_URL=slack.api_url,
    )  # fmt: skip


def mention(text: str, ts: str) -> dict[str, object]:
    return {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": "C1", "team": TEAM_ID, "event_ts": ts}  # fmt: skip


def texts(slack: FakeSlack, thread: str) -> list[str]:
    return [posted.text for posted in slack.thread("C1", thread)]


async def test_slack_killed_mid_answer_answers_once_after_a_restart(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeOpenAI() as model:
        port = free_port()
        env, log = slack_env(tmp_path, model, slack, port), tmp_path / "parley.log"
        sender = EventSender(f"http://127.0.0.1:{port}/slack/events", SECRET)
        model.script(Text(SLOW, interval=0.5))
        first = start(["run", "slack"], env, log)
        await healthy(port, first)
        thread = "1700000000.000100"
        assert await sender.event(mention("question", thread), event_id="Ev1") == 200
        await eventually(lambda: model.requests, within=WAIT)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert not any("echo" in text for text in texts(slack, thread))

        second = start(["run", "slack"], env, log)
        try:
            await healthy(port, second)
            await eventually(
                lambda: any("echo: question" in t for t in texts(slack, thread)), within=WAIT
            )
            assert any("Sorry for the delay" in t for t in texts(slack, thread))
            # Slack's retry of the same event after all that: nothing more.
            assert await sender.event(mention("question", thread), event_id="Ev1",
                                      retry_num=1) == 200  # fmt: skip
            await asyncio.sleep(1.5)
            assert len(model.requests) == 2
            assert sum("echo: question" in t for t in texts(slack, thread)) == 1
        finally:
            second.send_signal(signal.SIGTERM)
            assert await exit_code(second) == 0
        assert "Traceback" not in log.read_text()


async def left_by_a_dead_process(engine: Engine, text: str, key: str) -> None:
    """A question claimed and stored by a process that died before answering it."""
    asked = Message("test", "w1", "c1", "alice", text, dedupe_keys=(key,))
    turn = await engine.store.begin_turn(
        asked.dedupe_keys, asked.conversation, "dead", 0.0, asked.to_payload()
    )
    assert turn is not None
    await engine.store.admit_message(
        asked.conversation, "test:alice", UserLimits(), 0.0, text, 3, turn.id
    )


async def test_a_question_older_than_max_age_is_not_answered_late(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    engine = make_engine(recovery_max_age=60.0, lease_seconds=0.3)
    await left_by_a_dead_process(engine, "too late?", "ev:old")
    seen: list[tuple[Message, list[str]]] = []

    async def deliver(message: Message, events: object) -> None:
        seen.append((message, [event.text async for event in events]))  # type: ignore[attr-defined]

    # The turn was taken an hour ago, as far as the engine can tell.
    later = time.time() + 3600
    engine.clock = lambda: later  # type: ignore[method-assign]
    engine.recover_for("test", deliver)
    await eventually(lambda: seen, within=WAIT)
    [(recovered, shown)] = seen
    assert recovered.text == "too late?" and "lost the answer" in shown[0]
    assert await collect(engine, message("again", dedupe_keys=("ev:old",))) == []  # a retry


async def test_a_stale_question_is_answered_once_with_an_apology(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(lease_seconds=0.3)
    await left_by_a_dead_process(engine, "still there?", "ev:1")
    seen: list[list[str]] = []

    async def deliver(message: Message, events: object) -> None:
        seen.append([event.text async for event in events])  # type: ignore[attr-defined]

    engine.recover_for("test", deliver)
    await eventually(lambda: seen, within=WAIT)
    await asyncio.sleep(1.0)  # several looks for stale turns later: still once
    assert len(seen) == 1 and "Sorry for the delay" in seen[0][0]
    assert seen[0][-1] == "echo: still there?"
    history = await engine.store.recent(ConversationKey("test", "w1", "c1"), 10)
    # The question was stored once, before the crash; the answer once, now.
    assert [m.content for m in history.messages] == ["still there?", "echo: still there?"]
    assert len(fake_openai.requests) == 1


async def test_sigterm_lets_a_slack_answer_finish_and_exits_0(tmp_path: Path) -> None:
    async with FakeSlack() as slack, FakeOpenAI() as model:
        port = free_port()
        env, log = slack_env(tmp_path, model, slack, port), tmp_path / "parley.log"
        sender = EventSender(f"http://127.0.0.1:{port}/slack/events", SECRET)
        model.script(Text(SLOW, interval=0.3))
        process = start(["run", "slack"], env, log)
        await healthy(port, process)
        thread = "1700000000.000200"
        await sender.event(mention("question", thread), event_id="Ev1")
        await eventually(lambda: model.requests, within=WAIT)
        process.send_signal(signal.SIGTERM)
        assert await exit_code(process) == 0
        assert texts(slack, thread)[-1].strip() == SLOW
        assert "Traceback" not in log.read_text()


async def test_sigterm_lets_a_web_chat_answer_finish_and_exits_0(tmp_path: Path) -> None:
    async with FakeOpenAI() as model:
        port = free_port()
        env, log = environment(tmp_path, model, port), tmp_path / "parley.log"
        model.script(Text(SLOW, interval=0.3))
        process = start(["run", "web"], env, log)
        await healthy(port, process)
        frames: list[dict[str, object]] = []
        async with browser_like() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as page:
                assert page.status == 200
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws",
                                          origin=f"http://127.0.0.1:{port}") as socket:  # fmt: skip
                await socket.receive_json()  # the history
                await socket.send_json({"type": "message", "text": "question"})
                while (frame := await socket.receive_json())["type"] != "delta":
                    frames.append(frame)
                process.send_signal(signal.SIGTERM)
                async for raw in socket:
                    frame = json.loads(raw.data) if raw.type == aiohttp.WSMsgType.TEXT else {}
                    frames.append(frame)
                    if frame.get("type") == "done":
                        break
        assert await exit_code(process) == 0
        assert any(f.get("type") == "final" and f.get("text") == SLOW for f in frames)


async def test_sigterm_lets_a_terminal_answer_finish_and_exits_0(tmp_path: Path) -> None:
    async with FakeOpenAI() as model:
        env, log = environment(tmp_path, model, free_port()), tmp_path / "parley.log"
        model.script(Text(SLOW, interval=0.3))
        process = start(["chat", "--user", "ann"], env, log)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"question\n")
        process.stdin.flush()
        await eventually(lambda: model.requests, within=WAIT)
        process.send_signal(signal.SIGTERM)
        assert await exit_code(process) == 0
        assert SLOW in process.stdout.read().decode()
