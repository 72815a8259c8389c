"""Settings that change without a restart: a running `python -m bot run web` re-reads
config/parley.toml when it changes, and keeps the last good settings on a bad edit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot import live_config
from bot.access import NOT_FOR_YOU
from bot.config import load_settings
from bot.engine import Engine
from bot.live_config import LiveSettings, merge
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes import eventually
from tests.fakes.openai_server import FakeOpenAI
from tests.test_run import free_port
from tests.test_web_helpers import ask, browser_like, receive

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """[limits]
requests_per_minute = {rpm}
tokens_per_day = 0

[reload]
poll_seconds = {poll}
"""


class Running:
    """A Parley subprocess and the log lines it has written so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    async def logged(self, text: str, after: int = 0, within: float = 10.0) -> str:
        def line() -> str:
            return next((x for x in self.log[after:] if text in x), "")

        found = await eventually(line, within)
        return str(found)

    async def stop(self) -> int:
        self.process.terminate()
        code = await self.process.wait()
        await self._reader
        return code


@pytest.fixture
async def parley(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[tuple[Running, str]]:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PORT": str(port),
        "PARLEY_DB": str(tmp_path / "live.db"), "PARLEY_CONFIG": str(tmp_path / "parley.toml"),
        "OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_API_KEY": "test",
        "PARLEY_MODEL": "gpt-fake",
    }  # fmt: skip
    (tmp_path / "parley.toml").write_text(CONFIG.format(rpm=1, poll=0.1))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "web", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Running(process)
    await running.logged("HTTP on http://", within=60)
    try:
        yield running, f"http://127.0.0.1:{port}"
    finally:
        assert await running.stop() == 0
        assert not any("Traceback" in line for line in running.log), running.log


async def rewritten(running: Running, config: Path, poll: float) -> None:
    """Write the config with this poll setting, and wait until it is in force."""
    mark = len(running.log)
    config.write_text(CONFIG.format(rpm=1, poll=poll))  # noqa: ASYNC240  # a few bytes
    await running.logged("config: reloaded", mark)


def _said(frames: list[dict[str, object]]) -> str:
    return str(next(f["text"] for f in frames if f["type"] in ("final", "error")))


async def test_an_edit_changes_a_limit_without_restart_and_a_bad_edit_keeps_it(
    parley: tuple[Running, str], tmp_path: Path
) -> None:
    running, url = parley
    config = tmp_path / "parley.toml"
    async with browser_like() as client:
        async with client.get(url + "/") as page:
            assert page.status == 200
        socket = await client.ws_connect(url + "/ws", origin=url)
        await receive(socket)  # the history frame
        assert _said(await ask(socket, "one")) == "echo: one"
        assert "limit of 1 requests per minute" in _said(await ask(socket, "two"))

        mark = len(running.log)
        config.write_text(CONFIG.format(rpm=3, poll=0.1))
        assert "requests_per_minute" in await running.logged("config: reloaded", mark)
        assert _said(await ask(socket, "three")) == "echo: three"

        mark = len(running.log)
        config.write_text(CONFIG.format(rpm="-1", poll=0.1))
        refused = await running.logged("edit refused", mark)
        assert "limits.requests_per_minute must be a whole number >= 0" in refused
        # Still 3 a minute: "one", "three", then one more, then refused.
        assert _said(await ask(socket, "four")) == "echo: four"
        assert "limit of 3 requests per minute" in _said(await ask(socket, "five"))
        await socket.close()


async def test_sighup_rereads_at_once_when_polling_is_off(
    parley: tuple[Running, str], tmp_path: Path
) -> None:
    running, _ = parley
    config = tmp_path / "parley.toml"
    await rewritten(running, config, poll=0)  # polling off from now on
    mark = len(running.log)
    config.write_text(CONFIG.format(rpm=7, poll=0))
    await asyncio.sleep(1.5)  # more than a poll would take: nothing happens
    assert not any("config: reloaded" in line for line in running.log[mark:])
    running.process.send_signal(signal.SIGHUP)
    assert "requests_per_minute" in await running.logged("config: reloaded", mark)


@pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")
async def test_the_kernel_tells_of_an_edit_so_nothing_polls(
    parley: tuple[Running, str], tmp_path: Path
) -> None:
    running, _ = parley
    config = tmp_path / "parley.toml"
    await rewritten(running, config, poll=3600)  # a look once an hour at most
    # Renamed into place, as atomic writers and Kubernetes ConfigMaps do.
    mark = len(running.log)
    (tmp_path / "parley.toml.new").write_text(CONFIG.format(rpm=5, poll=3600))
    os.replace(tmp_path / "parley.toml.new", config)
    assert "requests_per_minute" in await running.logged("config: reloaded", mark)
    # Other files written in the folder are looked at, and not taken for an edit.
    mark = len(running.log)
    (tmp_path / "notes.txt").write_text("not the config")
    await asyncio.sleep(0.5)
    assert not any("config:" in line for line in running.log[mark:])


async def test_an_edit_before_the_watch_began_is_not_lost(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG.format(rpm=1, poll=3600))
    engine = make_engine(config_path=str(config), reload_poll_seconds=3600)
    live = LiveSettings(engine)  # as at start-up: the file's stamp is taken here
    config.write_text(CONFIG.format(rpm=6, poll=3600))  # and edited before it watches
    live.start()
    try:
        await eventually(lambda: engine.settings.requests_per_minute == 6)
    finally:
        await live.stop()


@contextlib.asynccontextmanager
async def watching(engine: Engine) -> AsyncIterator[None]:
    live = LiveSettings(engine)
    live.start()
    try:
        yield
    finally:
        await live.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")
async def test_a_symlinked_file_is_watched_where_it_lives(
    make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_config, "BACKSTOP_SECONDS", 3600.0)  # the kernel's word only
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "parley.toml"
    target.write_text(CONFIG.format(rpm=1, poll=3600))
    (tmp_path / "parley.toml").symlink_to(target)
    engine = make_engine(config_path=str(tmp_path / "parley.toml"), reload_poll_seconds=3600)
    async with watching(engine):
        await asyncio.sleep(0.1)
        target.write_text(CONFIG.format(rpm=8, poll=3600))  # edited in place, not the link
        await eventually(lambda: engine.settings.requests_per_minute == 8)


async def test_a_replaced_folder_is_looked_at_again(
    make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_config, "BACKSTOP_SECONDS", 0.2)
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "parley.toml").write_text(CONFIG.format(rpm=1, poll=3600))
    engine = make_engine(config_path=str(folder / "parley.toml"), reload_poll_seconds=3600)
    async with watching(engine):
        await asyncio.sleep(0.1)
        folder.rename(tmp_path / "config.old")  # a deploy swapping the whole folder
        folder.mkdir()
        (folder / "parley.toml").write_text(CONFIG.format(rpm=9, poll=3600))
        await eventually(lambda: engine.settings.requests_per_minute == 9)


async def test_without_the_kernel_s_word_the_file_is_looked_at(
    make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not Linux, or no inotify instance left: the stamps are compared every poll_seconds.
    monkeypatch.setattr(live_config, "_kernel_changes", lambda folders: None)
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG.format(rpm=1, poll=0.05))
    engine = make_engine(config_path=str(config), reload_poll_seconds=0.05)
    live = LiveSettings(engine)
    live.start()
    try:
        config.write_text(CONFIG.format(rpm=4, poll=0.05) + "\n# edited\n")
        await eventually(lambda: engine.settings.requests_per_minute == 4)
    finally:
        await live.stop()


async def test_bad_toml_is_refused_and_named(parley: tuple[Running, str], tmp_path: Path) -> None:
    running, url = parley
    mark = len(running.log)
    (tmp_path / "parley.toml").write_text("[limits\nrequests_per_minute = 2\n")
    refused = await running.logged("edit refused", mark)
    assert "is not valid TOML" in refused
    async with aiohttp.ClientSession() as client, client.get(url + "/health") as health:
        assert health.status == 200


def test_settings_that_need_a_restart_are_kept(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[web]\nport = 4000\n[model]\nsystem_prompt = "old"\n')
    old = load_settings(str(config), environ={})
    config.write_text('[web]\nport = 5000\n[model]\nsystem_prompt = "new"\n')
    merged = merge(old, load_settings(str(config), environ={}))
    assert (merged.port, merged.system_prompt) == (4000, "new")


async def test_reload_applies_access_lists_prompts_and_prices_to_a_running_engine(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\n')
    config = tmp_path / "parley.toml"
    config.write_text(f'[usage]\nprices_path = "{prices}"\n')
    engine = make_engine(config_path=str(config), prices_path=str(prices))
    live = LiveSettings(engine)
    config.write_text(
        f'[usage]\nprices_path = "{prices}"\n[model]\nsystem_prompt = "Be terse."\n'
        '[access]\nblock_users = ["test:mallory"]\n'
    )
    prices.write_text('["gpt-4o-mini"]\ninput = 100.0\noutput = 200.0\n')
    assert live.reload() is True
    assert final_text(await collect(engine, message("hi", user="mallory"))) == NOT_FOR_YOU
    await collect(engine, message("hi"))
    assert fake_openai.requests[-1]["messages"][0]["content"] == "Be terse."
    assert engine.prices.prices["gpt-4o-mini"].input == 100.0
    assert fake_openai.request_count == 1
