"""Discord through a crash, as a server's members meet it: `python -m bot run discord`
is killed mid-answer and restarted, and the question is answered once, late, with an
apology; the gateway delivering the same message again after that gets nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.discord_reply import STREAMING_MARK
from tests.discord_helpers import TOKEN
from tests.fakes import eventually
from tests.fakes.discord_payloads import BOT_ID, CHANNEL_ID, GUILD_ID
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Text
from tests.replicas import WAIT, healthy
from tests.test_recovery import SLOW, environment, exit_code, start
from tests.test_run import free_port


def answers(fake: FakeDiscord) -> list[str]:
    """The bot's finished messages in the test channel (streaming previews excluded)."""
    return [text for text in fake.channel_contents(CHANNEL_ID) if not text.endswith(STREAMING_MARK)]


@contextlib.asynccontextmanager
async def discord_setup(
    tmp_path: Path,
) -> AsyncIterator[tuple[FakeDiscord, FakeOpenAI, dict[str, str], int]]:
    """The fake Discord and model, and the environment of `python -m bot run discord`."""
    fake = FakeDiscord()
    await fake.start()
    try:
        async with FakeOpenAI() as model:
            port = free_port()
            env = environment(
                tmp_path, model, port, DISCORD_BOT_TOKEN=TOKEN, DISCORD_GUILD_IDS=str(GUILD_ID),
                PARLEY_DISCORD_API_URL=fake.api_url,
                PARLEY_DISCORD_GATEWAY_URL=fake.gateway_url + "?v=10&encoding=json",
            )  # fmt: skip
            yield fake, model, env, port
    finally:
        await fake.stop()


async def test_discord_killed_mid_answer_answers_once_after_a_restart(tmp_path: Path) -> None:
    async with discord_setup(tmp_path) as (fake, model, env, port):
        log = tmp_path / "parley.log"
        model.script(Text(SLOW, interval=0.5), Text("late answer", interval=0.2))
        first = start(["run", "discord"], env, log)
        await healthy(port, first)
        asked = await fake.send_message(f"<@{BOT_ID}> question", mentions=[BOT_ID])
        await eventually(lambda: model.requests, within=WAIT)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert not any("late answer" in text for text in fake.channel_contents(CHANNEL_ID))

        second = start(["run", "discord"], env, log)
        try:
            await healthy(port, second)
            await eventually(lambda: any("late answer" in t for t in answers(fake)), within=WAIT)
            [answer] = [text for text in answers(fake) if "late answer" in text]
            assert answer.startswith("late answer") and "Sorry for the delay" in answer
            # The gateway replays the same message (a resume after the restart): nothing.
            await fake.dispatch("MESSAGE_CREATE", asked)
            await asyncio.sleep(1.5)
            assert len(model.requests) == 2
            assert sum("late answer" in text for text in answers(fake)) == 1
        finally:
            second.send_signal(signal.SIGTERM)
            assert await exit_code(second) == 0
        assert "Traceback" not in log.read_text()


async def test_sigterm_lets_a_discord_answer_finish_and_exits_0(tmp_path: Path) -> None:
    async with discord_setup(tmp_path) as (fake, model, env, port):
        log = tmp_path / "parley.log"
        model.script(Text(SLOW, interval=0.3))
        process = start(["run", "discord"], env, log)
        await healthy(port, process)
        await fake.send_message(f"<@{BOT_ID}> question", mentions=[BOT_ID])
        await eventually(lambda: model.requests, within=WAIT)
        process.send_signal(signal.SIGTERM)  # mid-answer: the answer still finishes
        assert await exit_code(process) == 0
        assert [text.strip() for text in answers(fake)] == [SLOW]
        assert "Traceback" not in log.read_text()
