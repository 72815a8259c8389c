"""Engine time per message at 10, 1,000 and 100,000 stored messages.

    python bench/engine_bench.py [--messages 400] [--sizes 10,1000,100000] [--stream RATE]

The fake model runs in another process (zero latency, real socket), so the figures
are this process's work. For each history size it prints, per message:
- engine time: everything Engine.handle does except waiting for the model call
  (validation, dedupe, limit check, storing, prompt building, usage write),
- model call: the SDK call over the socket to the fake (the SDK's own work included),
- messages per second, sequential in one conversation (bound by the round trip),
then messages per second with 16 conversations at once, in several rounds (median and
range), and then the cost of the limit check and the usage write on their own.
Messages come from 50 users in turn, as in a busy team: one user alone sending
hundreds a second would only measure a rate limit that no real limit lets them reach.
This process is pinned to one core and the fake model to another, where the machine
has two: "on one core" is then literal, and neither steals the other's time.
With --stream RATE the fake answers every message with bench/platform_bench.py's
400-character answer, a word (1-2 tokens) a chunk at RATE chunks a second, as real
models do: a zero-latency answer arrives in one read and hides the per-chunk cost.
Each answer then takes 75 / RATE seconds: use --messages 40 or so.
Targets: engine p50 <= 2 ms, p99 <= 10 ms, 100,000 within 1.25x of 10; >= 300 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from bench.stores import drop_schemas, fill_history, fresh_store
from bot.config import Settings
from bot.engine import Engine
from bot.llm import Completion, Delta, ModelClient
from bot.messages import ConversationKey, Message
from bot.store import Store, UsageRecord
from bot.usage import Prices


class TimedModel(ModelClient):
    """The real client, with the time spent inside each call added up."""

    spent = 0.0

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Delta | Completion, None]:
        started = time.perf_counter()
        try:
            async for item in super().stream(*args, **kwargs):
                paused = time.perf_counter()
                self.spent += paused - started
                yield item
                started = time.perf_counter()
        finally:
            self.spent += time.perf_counter() - started


_senders = itertools.cycle([f"u{number}" for number in range(50)])


def next_user() -> str:
    return next(_senders)


def pin_cores() -> tuple[int, int] | None:
    """Pin this process to one core; return (ours, the fake model's), if there are two."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    os.sched_setaffinity(0, {cores[0]})
    return cores[0], cores[1]


def start_fake_model(core: int | None, rate: float = 0) -> tuple[subprocess.Popen[str], str]:
    pin = f"import os; os.sched_setaffinity(0, {{{core}}})\n" if core is not None else ""
    paced = ""
    if rate:
        from platform_bench import ANSWER

        paced = f"    fake.default = Text({ANSWER!r}, interval={1 / rate!r})\n"
    code = pin + (
        "import sys; from tests.fakes.openai_server import FakeOpenAI, Text\n"
        "with FakeOpenAI().run_in_thread() as fake:\n"
        f"{paced}"
        "    print(fake.base_url, flush=True); sys.stdin.read()\n"
    )
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=root,
    )  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class SizeRun:
    """One history size: its own database and engine, and the times measured so far."""

    def __init__(self, base_url: str, size: int, store: Store) -> None:
        settings = Settings(
            requests_per_minute=1_000_000, tokens_per_day=1_000_000_000, tools=()
        )  # fmt: skip
        self.size = size
        self.store = store
        self.model = TimedModel(
            api_key="bench", base_url=base_url, timeout_seconds=30, max_attempts=1,
            retry_max_wait_seconds=1,
        )  # fmt: skip
        prices = Prices.load("config/prices.toml")
        self.engine = Engine(settings, self.store, self.model, prices=prices)
        self.engine_ms: list[float] = []
        self.model_ms: list[float] = []
        self.wall = 0.0
        self.sent = 0

    async def send(self, count: int, keep: bool = True) -> None:
        wall_started = time.perf_counter()
        for _ in range(count):
            self.sent += 1
            text = f"Question number {self.sent}, short."
            self.model.spent = 0.0
            started = time.perf_counter()
            async for _ in self.engine.handle(Message("bench", "w", "c", next_user(), text)):
                pass
            total = time.perf_counter() - started
            if keep:
                self.engine_ms.append((total - self.model.spent) * 1000)
                self.model_ms.append(self.model.spent * 1000)
        if keep:
            self.wall += time.perf_counter() - wall_started

    async def close(self) -> None:
        await self.engine.close()
        await self.model.close()
        await self.store.close()

    def figures(self) -> dict[str, float]:
        return {
            "p50": statistics.median(self.engine_ms),
            "p99": percentile(self.engine_ms, 0.99),
            "model_p50": statistics.median(self.model_ms),
            "per_second": len(self.engine_ms) / self.wall,
        }


async def measure_sizes(
    base_url: str, sizes: list[int], messages: int, folder: Path, rounds: int = 5,
    kind: str = "sqlite",
) -> dict[int, dict[str, float]]:
    """Interleave the sizes in rounds, so a slow spell of a shared machine falls on
    every size alike instead of skewing the comparison."""
    runs = []
    for size in sizes:
        store = await fresh_store(kind, folder, f"size{size}")
        await fill_history(store, ConversationKey("bench", "w", "c", ""), size)
        runs.append(SizeRun(base_url, size, store))
    for run in runs:
        await run.send(20, keep=False)  # warm up connections and caches
    for _ in range(rounds):
        for run in runs:
            await run.send(messages // rounds)
    for run in runs:
        await run.close()
    return {run.size: run.figures() for run in runs}


async def concurrent_rate(
    base_url: str, folder: Path, conversations: int, each: int, rounds: int,
    kind: str = "sqlite",
) -> list[tuple[float, float]]:
    """Messages per second with many conversations in flight on this one core, and
    this process's CPU time per message (the SDK's included), which noisy neighbours
    on a shared machine disturb less than wall time."""
    settings = Settings(
        requests_per_minute=1_000_000, tokens_per_day=1_000_000_000, tools=(),
        max_concurrent_calls=conversations,
    )  # fmt: skip
    store = await fresh_store(kind, folder, "concurrent")
    model = ModelClient(
        api_key="bench", base_url=base_url, timeout_seconds=30, max_attempts=1,
        retry_max_wait_seconds=1,
    )  # fmt: skip
    engine = Engine(settings, store, model, prices=Prices.load("config/prices.toml"))

    async def talk(channel: str, count: int) -> None:
        for index in range(count):
            message = Message("bench", "w", channel, next_user(), f"Question {index}, short.")
            async for _ in engine.handle(message):
                pass

    await asyncio.gather(*(talk(f"warm{i}", 3) for i in range(conversations)))
    results = []
    for round_ in range(rounds):
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(talk(f"r{round_}c{i}", each) for i in range(conversations)))
        count = conversations * each
        rate = count / (time.perf_counter() - started)
        results.append((rate, (time.process_time() - cpu_started) / count * 1000))
    await engine.close()
    await model.close()
    await store.close()
    return results


async def micro(folder: Path, rounds: int = 2000, kind: str = "sqlite") -> tuple[float, float]:
    """Microseconds per limit check and per usage write, alone."""
    from bot.ratelimit import Limiter

    settings = Settings(requests_per_minute=1_000_000, tokens_per_day=1_000_000_000)
    store = await fresh_store(kind, folder, "micro")
    limiter = Limiter(store, settings)
    started = time.perf_counter()
    for index in range(rounds):
        await limiter.check(f"bench:u{index % 50}", False, time.time())
    check_us = (time.perf_counter() - started) / rounds * 1e6
    record = UsageRecord(
        "bench", "w", "c", "bench:u1", "gpt-4o-mini", 500, 50, 0, 0, 0.001, 5.0, "ok"
    )
    started = time.perf_counter()
    for _ in range(rounds):
        await store.record_usage(record)
    write_us = (time.perf_counter() - started) / rounds * 1e6
    await store.close()
    return check_us, write_us


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--sizes", default="10,1000,100000")
    parser.add_argument(
        "--stores", default="sqlite", help="sqlite and/or postgresql, comma-separated"
    )
    parser.add_argument("--stream", type=float, default=0, help="chunks a second (0: one burst)")
    arguments = parser.parse_args()
    cores = pin_cores()
    process, base_url = start_fake_model(cores[1] if cores else None, arguments.stream)
    if cores:
        print(f"this process on core {cores[0]}, the fake model on core {cores[1]}")
    try:
        with tempfile.TemporaryDirectory() as name:
            sizes = [int(size) for size in arguments.sizes.split(",")]
            each = 3 if arguments.stream else 40  # a paced answer takes 75 / rate seconds
            for kind in arguments.stores.split(","):
                print(f"-- {kind}")
                await report(kind, base_url, sizes, arguments.messages, Path(name), each)
    finally:
        await drop_schemas()
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


async def report(
    kind: str, base_url: str, sizes: list[int], messages: int, folder: Path, each: int = 40
) -> None:
    """Every figure for one kind of store."""
    print(f"{'history':>9} {'engine p50':>11} {'engine p99':>11}", end="")
    print(f" {'model p50':>10} {'msg/s':>7}")
    results = await measure_sizes(base_url, sizes, messages, folder, kind=kind)
    for size, result in results.items():
        print(
            f"{size:>9,} {result['p50']:>8.2f} ms {result['p99']:>8.2f} ms"
            f" {result['model_p50']:>7.2f} ms {result['per_second']:>7.0f}"
        )
    ordered = sorted(results)
    ratio = results[ordered[-1]]["p50"] / results[ordered[0]]["p50"]
    print(f"engine p50 at {ordered[-1]:,} / at {ordered[0]:,}: {ratio:.2f}x")
    rounds = await concurrent_rate(base_url, folder, 16, each, rounds=5, kind=kind)
    rates = [rate for rate, _ in rounds]
    cpu = [cpu_ms for _, cpu_ms in rounds]
    print(
        f"16 conversations at once: {statistics.median(rates):.0f} msg/s"
        f" (rounds {min(rates):.0f}-{max(rates):.0f});"
        f" CPU {statistics.median(cpu):.2f} ms per message"
        f" ({min(cpu):.2f}-{max(cpu):.2f})"
    )
    check_us, write_us = await micro(folder, kind=kind)
    print(f"limit check: {check_us:.0f} us per message; usage write: {write_us:.0f} us")


if __name__ == "__main__":
    asyncio.run(main())
