"""The whole platform path, measured from outside: CPU of the bot's process per answer.

    python bench/platform_bench.py [--quick] [--rounds 3] [--count 8] [--json FILE]
                                   [--baseline DIR]

Starts `python -m bot run slack` (HTTP Events API), `python -m bot run discord`, and
for the per-chunk figures `python -m bot run web` and `python -m bot chat` (on a
pseudo-terminal, so it streams) as real processes, against the fake Slack, fake
Discord and fake model of tests/fakes, each fake in a process of its own
(bench/platform_fakes.py; their CPU is not counted). Every conversation is seeded with
real messages answered by the bot (500 mentions make 1,000 history messages in about
ten seconds), then questions are sent one after another, each waiting for the answer
to be complete on the platform (Slack: chat.stopStream; Discord: the /ask response
edited to its final text; web: the "done" frame; terminal: the next prompt).

For each platform, history size and kind of answer it prints the bot process's CPU
(user + sys, read from /proc: nanoseconds from /proc/<pid>/task/*/schedstat, since
/proc/<pid>/stat counts in 10 ms ticks; both totals are printed and agree) per
answered message, median over rounds and range;
wall time from sending to the complete answer, p50 and p99 over every message; the
times the bot's process was woken per answer (voluntary context switches); and the
platform API calls per answer. Answers are one 400-character text (68 words), arriving
in one piece or streamed a word (1-2 tokens) per chunk at 25 or 100 chunks a second.
The extra CPU of a streamed answer over one in one piece, divided by the extra chunks,
is the cost of one streamed chunk. Kinds of answer and history sizes are interleaved
in every round (a slow spell of the shared machine falls on all alike), each round in
fresh conversations. The bots run on one core, the fakes and this script on the other.
History sizes: 10, 100 and 1,000 messages with the default settings (so the prompt
carries the newest 100), and 1,000 carried whole (context settings raised) in a second
process per platform. A batch in which the bot trimmed a conversation and wrote its
rolling summary (every 20 answers at the defaults; the fake model tells) is measured
again and reported apart: what the trim added, once and per answer, and how much later
the answer that met it came. bench/platform_instructions.py counts instructions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "How should we roll out the new billing service to the team this quarter?"
ANSWER = (
    "Roll it out in three steps. First, run the new billing service beside the old one "
    "for two weeks and compare every invoice; any difference is a bug to fix before "
    "going on. Second, move one small team over, with the old path one switch away. "
    "Third, move everyone at the start of a billing cycle, never in the middle. Keep "
    "the on-call rota staffed that week, and write down who decides to roll back."
)
CHUNKS = len(re.findall(r"\S+\s*", ANSWER))  # one word a chunk when streamed
MODES = {"one piece": 0.0, "25/s": 1 / 25, "100/s": 1 / 100}
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 0.05  # lets the bot finish reading the platform's last answer
# At the defaults (history_messages 100, trim_to 0.6) a full window is trimmed to its
# newest 60 messages, so a trim, with its rolling summary, comes every 20 answers.
ANSWERS_PER_TRIM = 20
MEASURE_TRIES = 3  # batches of one kind in one round, until one meets no trim


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads, living and dead), from
    /proc/<pid>/stat: in clock ticks (10 ms), too coarse for one batch of answers."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def cpu_ns(pid: int) -> int:
    """The same CPU time (user + system) in nanoseconds, summed over the process's
    threads from /proc/<pid>/task/*/schedstat. A thread that has ended is no longer
    counted; the bot's threads (the event loop and its executor's) live as long as it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def wake_ups(pid: int) -> int:
    """How often the process's threads went to sleep and were woken again (voluntary
    context switches, /proc/<pid>/task/*/status). On this project's virtual machines a
    wake-up from idle costs far more CPU than on bare metal (bench/README.md), so the
    number of them per answer explains much of what a streamed answer costs."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pin(pid: int, core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {core})


def cores() -> tuple[int | None, int | None]:
    """(the bots' core, everything else's), where the machine has two or more."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (available[0], available[1]) if len(available) >= 2 else (None, None)


class Host:
    """A fake in its own process, driven by one JSON line each way."""

    def __init__(self, process: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.process = process
        self.hello = hello

    @classmethod
    async def start(cls, kind: str, core: int | None, *options: str) -> Host:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "platform_fakes.py"), kind, *options,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        pin(process.pid, core)
        host = cls(process, {})
        host.hello = await host.read()
        return host

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit("a fake stopped; see its error above")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read()

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)


@dataclass
class Bot:
    """One bot process and how to talk to it on its platform."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    host: Host | None = None
    conversations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def platform(self) -> str:
        """slack, discord, web or console: the name without "-whole" or "@base"."""
        return self.name.split("@")[0].removesuffix("-whole")

    async def new_conversation(self) -> Any:
        self.conversations += 1
        if self.platform == "slack":
            assert self.host is not None
            return (await self.host.ask(op="thread"))["thread"]
        if self.platform == "discord":
            return self.conversations
        if self.platform == "web":
            return await WebConversation.open(self.port)
        await self.extra["console"].ask("/reset")
        return None

    async def ask(self, conversation: Any, count: int) -> tuple[list[float], dict[str, int]]:
        if self.platform == "slack":
            assert self.host is not None
            url = f"http://127.0.0.1:{self.port}/slack/events"
            answer = await self.host.ask(
                op="ask", url=url, thread=conversation, channel="C1", count=count, text=QUESTION
            )
            return answer["walls"], answer["calls"]
        if self.platform == "discord":
            assert self.host is not None
            answer = await self.host.ask(
                op="ask", conversation=conversation, count=count, text=QUESTION
            )
            return answer["walls"], answer["calls"]
        talker = conversation if self.platform == "web" else self.extra["console"]
        walls, calls = [], 0
        for _ in range(count):
            wall, frames = await talker.ask(QUESTION)
            walls.append(wall)
            calls += frames
        return walls, {"frames" if self.platform == "web" else "writes": calls}

    async def stop(self) -> None:
        if self.platform == "console":
            self.extra["console"].close()
        elif self.process.returncode is None:
            self.process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 300)


class WebConversation:
    """A browser tab of the web chat: one session cookie, one WebSocket."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def open(cls, port: int) -> WebConversation:
        base = f"http://127.0.0.1:{port}"
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with session.get(base + "/") as page:
            await page.read()
        ws = await session.ws_connect(base + "/ws", headers={"Origin": base})
        await ws.receive_json()  # the conversation so far
        return cls(session, ws)

    async def ask(self, text: str) -> tuple[float, int]:
        started = asyncio.get_running_loop().time()
        await self.ws.send_json({"type": "message", "text": text})
        frames = 0
        while (await self.ws.receive_json(timeout=60)).get("type") != "done":
            frames += 1
        return asyncio.get_running_loop().time() - started, frames


class Console:
    """`python -m bot chat` on a pseudo-terminal: it streams as to a person."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.buffer = b""
        self.writes = 0
        self.changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            self.buffer += os.read(self.master, 65536)
            self.writes += 1
        self.changed.set()

    async def prompt(self) -> None:
        while b"you> " not in self.buffer:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 600)
        self.buffer = self.buffer[self.buffer.rindex(b"you> ") + 5 :]

    async def ask(self, text: str) -> tuple[float, int]:
        started, writes = asyncio.get_running_loop().time(), self.writes
        os.write(self.master, text.encode() + b"\n")
        await self.prompt()
        return asyncio.get_running_loop().time() - started, self.writes - writes

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.write(self.master, b"\x04")  # end of input: the chat exits
        os.close(self.master)


def config_file(folder: Path, name: str, whole: bool) -> Path:
    path = folder / f"{name}.toml"
    model = "context_tokens = 1000000\nhistory_messages = 3000\n" if whole else ""
    path.write_text(
        f"[model]\n{model}[limits]\nrequests_per_minute = 0\ntokens_per_day = 0\n"
        f'[store]\npath = "{folder / name}.db"\n'
    )
    return path


async def start_bot(
    name: str, folder: Path, model_url: str, core: int | None, *, prefix: Sequence[str] = (),
    slack: Host | None = None, whole: bool = False, guilds: int = 40, root: Path = ROOT,
) -> Bot:  # fmt: skip
    """Start one bot process (of the checkout at `root`) and wait until it answers on
    its platform."""
    port = free_port()
    env = {
        **os.environ, "OPENAI_BASE_URL": model_url, "OPENAI_API_KEY": "bench",
        "PARLEY_CONFIG": str(config_file(folder, name, whole)), "PORT": str(port),
    }  # fmt: skip
    for variable in ("SLACK_APP_TOKEN", "PARLEY_DB", "PARLEY_MODEL", "PARLEY_WEB_TOKEN"):
        env.pop(variable, None)
    host = None
    platform = name.split("@")[0].removesuffix("-whole")
    if platform == "slack":
        assert slack is not None
        host = slack
        env |= {"SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": slack.hello["secret"],
                "PARLEY_SLACK_API_URL": slack.hello["api_url"]}  # fmt: skip
    elif platform == "discord":
        host = await Host.start("discord", None, str(guilds))
        env |= {
            "DISCORD_BOT_TOKEN": "bench-token", "PARLEY_DISCORD_API_URL": host.hello["api_url"],
            "PARLEY_DISCORD_GATEWAY_URL": host.hello["gateway_url"] + "?v=10&encoding=json",
            "DISCORD_GUILD_IDS": ",".join(str(guild) for guild in host.hello["guilds"]),
        }  # fmt: skip
    else:
        env.pop("SLACK_BOT_TOKEN", None)
        env.pop("DISCORD_BOT_TOKEN", None)
    command = [*prefix, sys.executable, "-m", "bot"]
    extra: dict[str, Any] = {}
    # A file, not a pipe nobody reads: a full pipe would stop the bot mid-answer.
    log = (folder / f"{name}.log").open("wb")
    if platform == "console":
        master, terminal = os.openpty()
        process = await asyncio.create_subprocess_exec(
            *command, "chat", "--user", "bench", "--channel", "bench",
            stdin=terminal, stdout=terminal, stderr=log, env=env, cwd=root,
        )  # fmt: skip
        os.close(terminal)
        extra["console"] = Console(master)
    else:
        process = await asyncio.create_subprocess_exec(
            *command, "run", platform, stderr=log, env=env, cwd=root
        )
    log.close()
    bot = Bot(name, process, port, host, extra=extra, log=folder / f"{name}.log")
    pin(process.pid, core)
    await wait_until_ready(bot, platform)
    return bot


async def wait_until_ready(bot: Bot, platform: str) -> None:
    if platform == "console":
        await bot.extra["console"].prompt()
        return
    if platform == "discord":
        assert bot.host is not None
        await bot.host.ask(op="ready")
        return
    async with aiohttp.ClientSession() as session:
        for _ in range(6000):  # under valgrind, start-up takes minutes
            if bot.process.returncode is not None:
                raise SystemExit(f"{bot.name} exited with {bot.process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{bot.port}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{bot.name} did not start")


async def set_mode(model: Host, mode: str) -> None:
    await model.ask(interval=MODES[mode], text=ANSWER)


async def seed(bot: Bot, model: Host, size: int) -> Any:
    """A fresh conversation holding `size` messages: size/2 real questions answered."""
    conversation = await bot.new_conversation()
    await set_mode(model, "one piece")
    if size >= 2:
        await bot.ask(conversation, size // 2)
    return conversation


@dataclass
class Figures:
    cpu_ms: list[float] = field(default_factory=list)  # per message, one per round
    walls: list[float] = field(default_factory=list)  # seconds, every message
    calls: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    wake_ups: int = 0
    ticks_seconds: float = 0.0  # the same batches' CPU by /proc/<pid>/stat
    ns_seconds: float = 0.0  # and by schedstat


Plan = list[tuple[Bot, int, str]]  # bot, history size, label


async def run_rounds(
    plan: Plan, model: Host, modes: Sequence[str], rounds: int, count: int
) -> tuple[dict[tuple[str, str, str], Figures], list[Trim]]:
    results: dict[tuple[str, str, str], Figures] = {}
    trims: list[Trim] = []
    for round_ in range(rounds):
        for bot, size, label in plan:
            conversation = await seed(bot, model, size)
            # Rotate the kinds of answer, so none always meets the longest history.
            order = list(modes[round_ % len(modes) :]) + list(modes[: round_ % len(modes)])
            for mode in order:
                await set_mode(model, mode)
                figures = results.setdefault((bot.name, label, mode), Figures())
                # A batch in which the bot trimmed the history and wrote the rolling
                # summary (a model call more, every 20 answers at the defaults) is kept
                # apart and measured again: else it falls on whichever kind of answer
                # meets it (at 100 history, the first after seeding). The last try is
                # kept whatever it met (a --count of 10 or more can meet another trim).
                for attempt in range(MEASURE_TRIES):
                    keep = attempt == MEASURE_TRIES - 1
                    trim = await measure(bot, model, conversation, count, figures, keep)
                    if trim is None:
                        break
                    trims.append(replace(trim, bot=bot.name, label=label, mode=mode))
            if isinstance(conversation, WebConversation):
                await conversation.session.close()
        print(f"round {round_ + 1} of {rounds} done", file=sys.stderr)
    return results, trims


@dataclass(frozen=True)
class Trim:
    """A batch in which the bot summarised: its CPU per answer and its longest wait."""

    cpu_ms: float
    wall_max: float
    kept: bool
    bot: str = ""
    label: str = ""
    mode: str = ""


async def summaries_asked(model: Host) -> int:
    return int((await model.ask(op="summaries"))["summaries"])


async def measure(
    bot: Bot, model: Host, conversation: Any, count: int, figures: Figures, keep: bool
) -> Trim | None:
    """Ask `count` questions and add the figures; if the bot summarised meanwhile, the
    batch as a Trim, its figures added only if `keep`."""
    summarised = await summaries_asked(model)
    await asyncio.sleep(SETTLE_SECONDS)
    before, ticks = cpu_ns(bot.pid), cpu_seconds(bot.pid)
    woken = wake_ups(bot.pid)
    walls, calls = await bot.ask(conversation, count)
    await asyncio.sleep(SETTLE_SECONDS)
    spent = cpu_ns(bot.pid) - before
    woken = wake_ups(bot.pid) - woken
    trim = None
    if await summaries_asked(model) > summarised:
        trim = Trim(spent / count / 1e6, max(walls), keep)
        if not keep:
            return trim
    figures.cpu_ms.append(spent / count / 1e6)
    figures.ticks_seconds += cpu_seconds(bot.pid) - ticks
    figures.ns_seconds += spent / 1e9
    figures.walls.extend(walls)
    figures.messages += count
    figures.wake_ups += woken
    for name, number in calls.items():
        figures.calls[name] = figures.calls.get(name, 0) + number
    return trim


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(results: dict[tuple[str, str, str], Figures]) -> list[dict[str, Any]]:
    rows = []
    print(f"{'platform':<14}{'history':<12}{'answer':<11}{'CPU/answer (range)':<24}"
          f"{'wall p50':>9}{'wall p99':>10}{'wakes':>7}  calls/answer")  # fmt: skip
    for (bot, label, mode), figures in results.items():
        cpu = statistics.median(figures.cpu_ms)
        calls = {name: number / figures.messages for name, number in figures.calls.items()}
        total = sum(calls.values())
        detail = ", ".join(f"{name} {number:g}" for name, number in sorted(calls.items()))
        p50, p99 = statistics.median(figures.walls), percentile(figures.walls, 0.99)
        wakes = figures.wake_ups / figures.messages
        print(
            f"{bot:<14}{label:<12}{mode:<11}"
            f"{f'{cpu:.2f} ms ({min(figures.cpu_ms):.2f}-{max(figures.cpu_ms):.2f})':<24}"
            f"{p50 * 1000:>6.0f} ms{p99 * 1000:>7.0f} ms{wakes:>7.1f}  {total:.2f} ({detail})"
        )
        rows.append({"platform": bot, "history": label, "answer": mode, "cpu_ms": cpu,
                     "cpu_ms_rounds": figures.cpu_ms, "wall_p50_ms": p50 * 1000,
                     "wall_p99_ms": p99 * 1000, "wake_ups": wakes, "calls": calls})  # fmt: skip
    ticks = sum(figures.ticks_seconds for figures in results.values())
    exact = sum(figures.ns_seconds for figures in results.values())
    print(f"all measured batches: {ticks:.2f} s of CPU by /proc/<pid>/stat (user + sys), "
          f"{exact:.2f} s by schedstat (the figures above)")  # fmt: skip
    print(f"\nCPU per streamed chunk: (streamed - one piece) / {CHUNKS - 1} extra chunks")
    for (bot, label, mode), figures in results.items():
        one = results.get((bot, label, "one piece"))
        if mode == "one piece" or one is None:
            continue
        extra = (statistics.median(figures.cpu_ms) - statistics.median(one.cpu_ms)) / (CHUNKS - 1)
        print(f"{bot:<14}{label:<12}{mode:<11}{extra * 1000:>6.0f} µs per chunk")
        rows.append({"platform": bot, "history": label, "answer": mode,
                     "us_per_chunk": extra * 1000})  # fmt: skip
    return rows


def report_trims(
    results: dict[tuple[str, str, str], Figures], trims: Sequence[Trim], count: int
) -> list[dict[str, Any]]:
    """What a trim with its rolling summary added to its batch, and per answer."""
    if not trims:
        return []
    print(f"\nBatches with a trim and its rolling summary (at the defaults one every "
          f"{ANSWERS_PER_TRIM} answers; the fake model streams the summary as it streams the "
          "answers, and the answer waits for it), measured again without:")  # fmt: skip
    rows = []
    for trim in trims:
        clean = results[(trim.bot, trim.label, trim.mode)]
        added = (trim.cpu_ms - statistics.median(clean.cpu_ms)) * count
        waited = trim.wall_max - statistics.median(clean.walls)
        kept = " (kept: no try without one)" if trim.kept else ""
        print(f"{trim.bot:<14}{trim.label:<12}{trim.mode:<11}{added:+.2f} ms once, "
              f"{added / ANSWERS_PER_TRIM:+.2f} ms per answer; the answer that met it came "
              f"{waited:+.2f} s later{kept}")  # fmt: skip
        rows.append({"platform": trim.bot, "history": trim.label, "answer": trim.mode,
                     "trim_ms": added, "trim_ms_per_answer": added / ANSWERS_PER_TRIM,
                     "trim_wait_s": waited, "kept": trim.kept})  # fmt: skip
    return rows


@contextlib.asynccontextmanager
async def bots(
    names: Sequence[str], folder: Path, model: Host, core: int | None, other: int | None,
    baseline: Path | None = None,
) -> AsyncIterator[dict[str, Bot]]:  # fmt: skip
    slack = await Host.start("slack", other) if any(n.startswith("slack") for n in names) else None
    started: dict[str, Bot] = {}
    try:
        for name in names:
            root = baseline if name.endswith("@base") and baseline else ROOT
            started[name] = await start_bot(
                name, folder, model.hello["url"], core, slack=slack,
                whole="-whole" in name, root=root,
            )  # fmt: skip
            if started[name].host is not None:
                pin(started[name].host.process.pid, other)  # type: ignore[union-attr]
        yield started
    finally:
        for bot in started.values():
            await bot.stop()
            if bot.host is not None and bot.host is not slack:
                await bot.host.close()
        if slack is not None:
            await slack.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 history, 2 rounds: < 1 min")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=8, help="answers per measurement")
    parser.add_argument("--platforms", default="slack,discord,web,console")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--modes", help="kinds of answer, comma-separated (default: all)")
    parser.add_argument(
        "--baseline", type=Path,
        help="a checkout of other code (git worktree add DIR COMMIT) whose bots run beside "
        "these, interleaved in every round, as NAME@base: on a shared machine whose speed "
        "drifts, two versions compare fairly only within one run",
    )  # fmt: skip
    arguments = parser.parse_args()
    core, other = cores()
    if other is not None:
        pin(os.getpid(), other)
    platforms = arguments.platforms.split(",")
    modes: list[str] = list(MODES)
    sizes = [10, 100, 1000]
    if arguments.quick:
        platforms = [p for p in platforms if p in ("slack", "discord")]
        modes, sizes, arguments.rounds, arguments.count = ["one piece", "100/s"], [10], 2, 5
    if arguments.modes:
        modes = arguments.modes.split(",")
    names = [*platforms]
    if not arguments.quick:
        names += [f"{p}-whole" for p in platforms if p in ("slack", "discord")]
    if arguments.baseline:
        names = [name for own in names for name in (own, f"{own}@base")]
    model = await Host.start("model", other)
    try:
        with tempfile.TemporaryDirectory() as name:
            async with bots(names, Path(name), model, core, other, arguments.baseline) as running:
                plan: Plan = []
                for bot in running.values():
                    if "-whole" in bot.name:
                        plan.append((bot, 1000, "1000 whole"))
                    elif bot.platform in ("web", "console"):
                        plan.append((bot, 10, "10"))
                    else:
                        plan += [(bot, size, str(size)) for size in sizes]
                for bot in running.values():  # warm up: connections, caches, imports
                    conversation = await seed(bot, model, 4)
                    for mode in modes:
                        await set_mode(model, mode)
                        await bot.ask(conversation, 2)
                    if isinstance(conversation, WebConversation):
                        await conversation.session.close()
                results, trims = await run_rounds(
                    plan, model, modes, arguments.rounds, arguments.count
                )
        rows = report(results) + report_trims(results, trims, arguments.count)
        if arguments.json:
            with open(arguments.json, "w") as out:  # noqa: ASYNC230  # after the measuring
                json.dump(rows, out, indent=1)
    finally:
        await model.close()


if __name__ == "__main__":
    asyncio.run(main())
