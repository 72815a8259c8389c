"""Web chat through a crash, as a person meets it: the page is open, Parley is killed
mid-answer and restarted, and the page (reconnecting, as it does by itself) shows the
question answered once, late, with an apology."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.openai_server import FakeOpenAI, Text
from tests.replicas import WAIT, healthy
from tests.test_recovery import SLOW, environment, exit_code, start
from tests.test_run import free_port
from tests.test_web_helpers import browser_like


async def _frames_until_done(socket: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async for raw in socket:
        if raw.type is not aiohttp.WSMsgType.TEXT:
            break
        frames.append(json.loads(raw.data))
        if frames[-1].get("type") == "done":
            break
    return frames


async def test_web_chat_killed_mid_answer_answers_once_when_the_page_reconnects(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI() as model, browser_like() as browser:
        port = free_port()
        env, log = environment(tmp_path, model, port), tmp_path / "parley.log"
        base, origin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        # The first answer is cut by the kill; the second streams while the page is away.
        model.script(Text(SLOW, interval=0.5), Text("late answer", interval=0.5))
        first = start(["run", "web"], env, log)
        await healthy(port, first)
        async with browser.get(f"{base}/") as page:
            assert page.status == 200
        async with browser.ws_connect(f"{base}/ws", origin=origin) as socket:
            assert (await socket.receive_json())["type"] == "history"
            await socket.send_json({"type": "message", "text": "question"})
            while (await socket.receive_json())["type"] != "delta":
                pass
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

        second = start(["run", "web"], env, log)
        try:
            await healthy(port, second)
            # The page reconnects at once, before the restarted process has taken the
            # dead one's question over: the answer streams into this socket.
            async with browser.ws_connect(f"{base}/ws", origin=origin) as socket:
                history = await socket.receive_json()
                assert [m["role"] for m in history["messages"]] == ["user"]
                async with asyncio.timeout(WAIT):
                    frames = await _frames_until_done(socket)
            assert "Sorry for the delay" in frames[0]["text"]
            assert frames[-2] == {
                "type": "final", "text": "late answer", "private": False,
                "html": "<p>late answer</p>\n",  # rendered Markdown, sanitised
            }  # fmt: skip
            # A reload later shows the question and its one answer, stored once.
            async with browser.ws_connect(f"{base}/ws", origin=origin) as socket:
                history = await socket.receive_json()
            shown = [(m["role"], m["text"]) for m in history["messages"]]
            assert shown == [("user", "question"), ("assistant", "late answer")]
            assert len(model.requests) == 2
        finally:
            second.send_signal(signal.SIGTERM)
            assert await exit_code(second) == 0
        assert "Traceback" not in log.read_text()
