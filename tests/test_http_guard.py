"""The HTTP server against slow and numerous clients, over real sockets (bot/http_guard.py).

Deadlines are configured short; waits are generous bounds, never measurements.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import ClientSession
from yarl import URL

from bot.http_guard import ACCEPT_ERROR, RateLimitedLog, connection_cap, quiet_accept_errors
from tests.conftest import EngineFactory
from tests.test_run import ROOT, free_port, wait_for_health
from tests.test_web_helpers import serve

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
WITHIN = 15.0  # seconds: a bound for "eventually", far above every configured deadline
HALF_SENT_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@asynccontextmanager
async def server(make_engine: EngineFactory, **settings: object) -> AsyncIterator[URL]:
    async with serve(make_engine(**settings)) as url:
        yield URL(url)


async def connect(url: URL, first_bytes: bytes = b"") -> Stream:
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


RESET = b"(reset)"


async def everything_until_closed(stream: Stream) -> bytes:
    """What the server sends before it closes the connection (fails if it never does).
    RESET when the server closed with our bytes unread, which the kernel turns into a
    reset that may overtake what it wrote."""
    reader, writer = stream
    try:
        return await asyncio.wait_for(reader.read(), WITHIN)
    except ConnectionResetError:
        return RESET
    finally:
        writer.close()


async def health_status(url: URL) -> int:
    async with ClientSession() as client, client.get(url / "health") as response:
        return response.status


async def test_half_sent_requests_are_closed_and_others_still_answered(
    make_engine: EngineFactory,
) -> None:
    async with server(make_engine, header_timeout_seconds=1.0) as url:
        slow = [await connect(url, HALF_SENT_HEAD) for _ in range(60)]
        assert await health_status(url) == 200  # while all 60 are held
        answers = await asyncio.gather(*(everything_until_closed(s) for s in slow))
        assert await health_status(url) == 200
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)


async def test_trickling_a_request_head_does_not_extend_its_deadline(
    make_engine: EngineFactory,
) -> None:
    async with server(make_engine, header_timeout_seconds=0.5) as url:
        reader, writer = await connect(url, HALF_SENT_HEAD)
        closed = False
        for _ in range(int(WITHIN / 0.1)):  # a byte every 0.1 s, far past the deadline
            try:
                writer.write(b"a")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
            await asyncio.sleep(0.1)
        writer.close()
    assert closed


async def test_a_kept_alive_connection_gets_a_new_deadline_for_its_next_request(
    make_engine: EngineFactory,
) -> None:
    async with server(make_engine, header_timeout_seconds=0.5) as url:
        reader, writer = await connect(url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
        assert first.startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(1.0)  # idle past the head deadline: keep-alive's to judge
        assert not reader.at_eof()
        writer.write(HALF_SENT_HEAD)
        rest = await everything_until_closed((reader, writer))
    assert b"HTTP/1.1 408 " in rest


async def test_a_body_sent_too_slowly_is_cut_off(make_engine: EngineFactory) -> None:
    async with server(make_engine, body_timeout_seconds=0.5) as url:
        head = b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
        answer = await everything_until_closed(await connect(url, head + b"x" * 10))
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert await health_status(url) == 200


async def test_connections_over_the_cap_are_refused_until_some_close(
    make_engine: EngineFactory,
) -> None:
    async with server(make_engine, max_connections=5, header_timeout_seconds=60.0) as url:
        idle = [await connect(url) for _ in range(5)]
        refused = await everything_until_closed(await connect(url))
        assert refused.startswith(b"HTTP/1.1 503 ")
        for _, writer in idle:
            writer.close()

        async def answered() -> bool:
            return await health_status(url) == 200

        for _ in range(int(WITHIN / 0.05)):  # the closes reach the server in a moment
            if await answered():
                break
            await asyncio.sleep(0.05)
        assert await answered()


async def test_a_burst_of_connections_cannot_overshoot_the_cap(
    make_engine: EngineFactory,
) -> None:
    async with server(make_engine, max_connections=5, header_timeout_seconds=60.0) as url:
        burst = await asyncio.gather(*(connect(url) for _ in range(50)))

        async def held(stream: Stream) -> bool:
            try:  # a refused one is closed at once; a held one stays open for a minute
                await asyncio.wait_for(stream[0].read(), 2.0)
            except TimeoutError:
                return True
            except ConnectionResetError:
                return False
            finally:
                stream[1].close()
            return False

        assert sum(await asyncio.gather(*(held(s) for s in burst))) == 5


@pytest.mark.parametrize(
    ("configured", "file_limit", "cap"),
    [(1000, 20000, 1000), (1000, 256, 256 - 64), (1000, 40, 16), (5, 256, 5)],
)
def test_the_cap_leaves_descriptors_for_everything_else(
    configured: int, file_limit: int, cap: int
) -> None:
    assert connection_cap(configured, file_limit) == cap


async def test_accept_errors_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    try:
        quiet_accept_errors(loop)
        quiet_accept_errors(loop)  # installing twice changes nothing
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(1000):
                error = OSError(24, "Too many open files")
                loop.call_exception_handler({"message": ACCEPT_ERROR, "exception": error})
            loop.call_exception_handler({"message": "something else broke"})
    finally:
        loop.set_exception_handler(before)
    messages = [record.getMessage() for record in caplog.records]
    assert sum(ACCEPT_ERROR in message for message in messages) == 1
    assert any("something else broke" in message for message in messages)


def test_a_rate_limited_log_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.limited"):
        for _ in range(5):
            limited.log(logging.INFO, "busy")
        now[0] = 10.0
        limited.log(logging.INFO, "busy")
    assert [r.getMessage() for r in caplog.records] == [
        "busy",
        "busy (4 more like this not logged)",
    ]


def test_python_m_bot_run_cuts_off_half_sent_requests(tmp_path: Path) -> None:
    """As a user starts it: more half-sent requests than the cap, and it still answers."""
    port = free_port()
    config = tmp_path / "parley.toml"
    config.write_text("[web]\nheader_timeout_seconds = 0.5\nmax_connections = 20\n")
    env = {
        "PATH": os.environ.get("PATH", ""), "PORT": str(port), "HOME": str(tmp_path),
        "PARLEY_DB": str(tmp_path / "run.db"), "PARLEY_CONFIG": str(config),
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_health(port, process)
        answers = asyncio.run(_flood_then_ask(URL(f"http://127.0.0.1:{port}")))
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert all(a.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 ", RESET)) for a in answers)
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) >= 10  # held, then cut


async def _flood_then_ask(url: URL) -> list[bytes]:
    slow = [await connect(url, HALF_SENT_HEAD) for _ in range(40)]
    answers = await asyncio.gather(*(everything_until_closed(s) for s in slow))
    assert await health_status(url) == 200
    return list(answers)
