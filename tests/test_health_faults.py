"""/health and the chat while the database is in trouble, as an operator meets it:
another process holds SQLite's write lock (a backup, the admin CLI), or the disk is
full. `python -m bot run web` runs as a subprocess; the lock holder is another."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.openai_server import FakeOpenAI, Text
from tests.replicas import healthy
from tests.test_recovery import environment, exit_code, start
from tests.test_run import free_port
from tests.test_web_helpers import browser_like

# A load balancer's probe gives up after about a second; a little slack for a busy machine.
PROBE = aiohttp.ClientTimeout(total=2.0)
HOLD_SECONDS = 5
HOLD_LOCK = f"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep({HOLD_SECONDS})
db.execute("COMMIT")
"""


def hold_write_lock(database: Path) -> subprocess.Popen[str]:
    """Another process in a write transaction on `database`, for HOLD_SECONDS."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(database)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


async def probe(session: aiohttp.ClientSession, port: int) -> tuple[int, dict[str, object]]:
    async with session.get(f"http://127.0.0.1:{port}/health", timeout=PROBE) as response:
        return response.status, await response.json()


async def test_health_answers_and_answers_stream_while_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI() as model, browser_like() as browser:
        port = free_port()
        env, log = environment(tmp_path, model, port), tmp_path / "parley.log"
        model.script(Text("one two three four five six seven eight nine ten", interval=0.3))
        bot = start(["run", "web"], env, log)
        try:
            await healthy(port, bot)
            base = f"http://127.0.0.1:{port}"
            async with browser.get(base + "/") as page:
                assert page.status == 200
            async with browser.ws_connect(base + "/ws", origin=base) as socket:
                await socket.receive_json()  # the history
                await socket.send_json({"type": "message", "text": "count to ten"})
                while (await socket.receive_json())["type"] != "delta":
                    pass
                holder = hold_write_lock(tmp_path / "parley.db")
                # The probe gets its answer while the lock is held: busy, not a hang.
                status, report = await probe(browser, port)
                assert holder.poll() is None
                assert (status, report["database"]) in ((503, "busy"), (200, "ok"))
                streamed_while_locked = 0
                while (frame := await socket.receive_json(timeout=30))["type"] != "done":
                    if frame["type"] == "delta" and holder.poll() is None:
                        streamed_while_locked += 1
                    if frame["type"] == "final":
                        final = frame["text"]
                assert streamed_while_locked >= 2
                assert final == "one two three four five six seven eight nine ten"
                holder.wait(timeout=30)
            await asyncio.sleep(1.1)  # /health reports afresh at most once a second
            assert (await probe(browser, port))[0] == 200
        finally:
            bot.send_signal(signal.SIGTERM)
            assert await exit_code(bot) == 0
        assert "Traceback" not in log.read_text()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system of its own (tmpfs), or a skip where mounting is not allowed."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mount = shutil.which("mount")
    mounted = mount is not None and subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0  # fmt: skip
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk case is untested")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write until the file system is full."""
    with (folder / "filler").open("wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    with contextlib.suppress(OSError):
        (folder / "filler-small").write_bytes(b"\0" * 4096)


async def test_health_reports_not_writable_when_the_disk_is_full(
    tmp_path: Path, tiny_disk: Path
) -> None:
    async with FakeOpenAI() as model, aiohttp.ClientSession() as session:
        port = free_port()
        env = environment(tmp_path, model, port, PARLEY_DB=str(tiny_disk / "parley.db"))
        log = tmp_path / "parley.log"
        bot = start(["run", "web"], env, log)
        try:
            await healthy(port, bot)
            fill(tiny_disk)
            with pytest.raises(OSError) as full:
                (tiny_disk / "one-more").write_bytes(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
            await asyncio.sleep(1.1)  # past the one-second /health cache
            status, report = await probe(session, port)
            assert status == 503
            assert report["database_writable"] is False
            assert report["database"] == "not writable"
        finally:
            bot.send_signal(signal.SIGTERM)
            await exit_code(bot)
        assert "Traceback" not in log.read_text()
