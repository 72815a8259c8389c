"""Soak: steady load for N minutes, watching the bot's memory, descriptors and latency.

    python bench/soak.py [--minutes 10] [--web 6] [--slack 6] [--report-every 30]

Starts `python -m bot run slack web` as a real process against the fake model and the
fake Slack of tests/fakes (run in this script's event loop, over real sockets), then
keeps it busy: `--web` browser tabs on the web chat's WebSocket and `--slack` Slack
users posting signed HTTP Events (app_mention and the duplicate message event, as
Slack sends them), each asking one question after another and waiting for the whole
answer (web: the "done" frame; Slack: chat.stopStream). Each tab takes a new session
and each Slack user a new thread every 20 questions, so caches and sockets come and
go as they do for real. Answers stream a word per chunk.

Every `--report-every` seconds it prints the bot's RSS, open file descriptors, answers
per second and p50/p99 latency over that window; at the end a verdict: RSS at the end
within 10% of RSS after the warm-up (the first fifth of the run, at least 60 s), and
descriptors flat (at most 10 more than after warm-up). Exit 1 if either fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.platform_bench import free_port  # noqa: E402
from bench.platform_fakes import SignedEvents  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Text  # noqa: E402
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID, FakeSlack  # noqa: E402

SECRET = "soak-signing-secret"
ANSWER = "Keep the rota staffed, compare every invoice, and roll back if anything differs."
QUESTION = "How should we roll out the new billing service?"
PER_CONVERSATION = 20  # questions before a tab takes a new session / a user a new thread
RSS_TOLERANCE = 0.10
FD_TOLERANCE = 10


class SoakSlack(FakeSlack):
    """Tells each thread's waiter when its answer is complete."""

    def __init__(self) -> None:
        super().__init__()
        self.waiters: dict[str, asyncio.Event] = {}

    def _done(self, thread_ts: str) -> None:
        event = self.waiters.get(thread_ts)
        if event is not None:
            event.set()

    def _chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_stopStream(params)
        posted = self._find(params)
        if posted is not None:
            self._done(posted.thread_ts)
        return result

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._done(str(params.get("thread_ts", "")))  # an error or a plain answer
        return super()._chat_postMessage(params)

    def forget(self) -> None:
        """Drop what the fake keeps: the soak measures the bot, not this process."""
        self.calls.clear()
        # Streams in progress stay: the bot still appends to and stops them.
        self.posted = {ts: p for ts, p in self.posted.items() if p.streaming}


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Soak:
    port: int
    slack: SoakSlack
    model: FakeOpenAI
    window: Window = field(default_factory=Window)
    answers: int = 0
    stopping: bool = False

    def record(self, seconds: float) -> None:
        self.window.latencies.append(seconds)
        self.answers += 1

    async def web_tab(self) -> None:
        while not self.stopping:
            try:
                await self._web_session()
            except (aiohttp.ClientError, TimeoutError):
                self.window.errors += 1

    async def _web_session(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        if not self.stopping:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                async with session.get(base + "/") as page:
                    await page.read()
                async with session.ws_connect(base + "/ws", headers={"Origin": base}) as ws:
                    await ws.receive_json()  # the history
                    for _ in range(PER_CONVERSATION):
                        if self.stopping:
                            return
                        started = time.perf_counter()
                        await ws.send_json({"type": "message", "text": QUESTION})
                        while (frame := await ws.receive_json(timeout=60))["type"] != "done":
                            self.window.errors += frame["type"] == "error"
                        self.record(time.perf_counter() - started)

    async def slack_user(self, number: int, users: SignedEvents) -> None:
        url = f"http://127.0.0.1:{self.port}/slack/events"
        while not self.stopping:
            thread = users.new_ts()
            done = self.slack.waiters[thread] = asyncio.Event()
            try:
                for _ in range(PER_CONVERSATION):
                    if self.stopping:
                        return
                    await self._mention(users, url, thread, number, done)
            finally:
                del self.slack.waiters[thread]

    async def _mention(
        self, users: SignedEvents, url: str, thread: str, number: int, done: asyncio.Event
    ) -> None:
        ts = users.new_ts()
        event = {
            "user": f"U{number}", "text": f"<@{BOT_USER_ID}> {QUESTION}", "ts": ts,
            "thread_ts": thread, "channel": "C1", "team": TEAM_ID,
            "channel_type": "channel", "event_ts": ts,
        }  # fmt: skip
        done.clear()
        started = time.perf_counter()
        await users.post(url, {"type": "app_mention", **event})
        await users.post(url, {"type": "message", **event})
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            self.window.errors += 1
            return
        self.record(time.perf_counter() - started)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def start_bot(folder: Path, port: int, model: FakeOpenAI, slack: FakeSlack) -> Any:
    config = folder / "soak.toml"
    # No per-address web limit: every tab comes from 127.0.0.1.
    config.write_text(
        "[web]\nchat_requests_per_minute_per_address = 0\nchat_requests_per_minute = 0\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(folder), "PORT": str(port),
        "PARLEY_CONFIG": str(config), "PARLEY_DB": str(folder / "parley.db"),
        "OPENAI_API_KEY": "soak", "OPENAI_BASE_URL": model.base_url,
        "PARLEY_RATE_PER_MINUTE": "0", "PARLEY_TOKENS_PER_DAY": "0",
        "SLACK_BOT_TOKEN": "xoxb-soak", "SLACK_SIGNING_SECRET": SECRET,
        "PARLEY_SLACK_API_URL": slack.api_url,
    }  # fmt: skip
    log = (folder / "parley.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "slack", "web", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return process
            await asyncio.sleep(0.1)
    raise SystemExit("the bot did not become healthy; see " + str(folder / "parley.log"))


async def report(soak: Soak, pid: int, seconds: float, every: float) -> list[tuple[float, int]]:
    """Print a line every `every` s; return (RSS MB, fds) per line."""
    samples: list[tuple[float, int]] = []
    began = time.monotonic()
    print(f"{'t(s)':>6} {'RSS MB':>8} {'fds':>5} {'answers/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>6}", flush=True)  # fmt: skip
    for tick in itertools.count(1):
        await asyncio.sleep(max(0.0, began + tick * every - time.monotonic()))
        window, soak.window = soak.window, Window()
        soak.model.requests.clear()
        soak.slack.forget()
        rss, fds = rss_mb(pid), open_fds(pid)
        samples.append((rss, fds))
        p50, p99 = percentile(window.latencies, 0.5), percentile(window.latencies, 0.99)
        print(f"{tick * every:6.0f} {rss:8.1f} {fds:5d} {len(window.latencies) / every:10.1f} "
              f"{p50 * 1000:8.0f} {p99 * 1000:8.0f} {window.errors:6d}", flush=True)  # fmt: skip
        if tick * every >= seconds:
            return samples
    return samples


def verdict(samples: list[tuple[float, int]], every: float, seconds: float, answers: int) -> bool:
    warm = max(1, int(max(60.0, seconds / 5) / every)) - 1  # the sample ending warm-up
    warm = min(warm, len(samples) - 1)
    (rss_warm, fds_warm), (rss_end, fds_end) = samples[warm], samples[-1]
    growth = (rss_end - rss_warm) / rss_warm
    peak_fds = max(fds for _, fds in samples[warm:])
    rss_ok, fds_ok = growth <= RSS_TOLERANCE, peak_fds - fds_warm <= FD_TOLERANCE
    print(f"\n{answers} answers in {seconds / 60:g} min ({answers / seconds:.1f}/s)")
    print(f"RSS after warm-up ({(warm + 1) * every:.0f} s) {rss_warm:.1f} MB, at the end "
          f"{rss_end:.1f} MB ({growth:+.1%}, limit +{RSS_TOLERANCE:.0%}): "
          f"{'ok' if rss_ok else 'FAIL'}")  # fmt: skip
    print(f"fds after warm-up {fds_warm}, at the end {fds_end}, peak {peak_fds} "
          f"(limit +{FD_TOLERANCE}): {'ok' if fds_ok else 'FAIL'}")  # fmt: skip
    print(f"verdict: {'PASS' if rss_ok and fds_ok else 'FAIL'}")
    return rss_ok and fds_ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--web", type=int, default=6, help="web chat tabs asking at once")
    parser.add_argument("--slack", type=int, default=6, help="Slack users asking at once")
    parser.add_argument("--report-every", type=float, default=30.0)
    options = parser.parse_args()
    seconds = options.minutes * 60
    with tempfile.TemporaryDirectory(prefix="parley-soak-") as folder:
        async with FakeOpenAI() as model, SoakSlack() as slack:
            model.default = Text(ANSWER, interval=0.005)  # a word per chunk, paced
            port = free_port()
            bot = await start_bot(Path(folder), port, model, slack)
            soak = Soak(port, slack, model)
            try:
                async with aiohttp.ClientSession() as session:
                    users = SignedEvents(session, SECRET)
                    load = [asyncio.create_task(soak.web_tab()) for _ in range(options.web)]
                    load += [asyncio.create_task(soak.slack_user(n, users))
                             for n in range(options.slack)]  # fmt: skip
                    samples = await report(soak, bot.pid, seconds, options.report_every)
                    soak.stopping = True
                    await asyncio.wait(load, timeout=60)
                    for task in load:
                        task.cancel()
            finally:
                bot.terminate()
                await bot.wait()
    return 0 if verdict(samples, options.report_every, seconds, soak.answers) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
