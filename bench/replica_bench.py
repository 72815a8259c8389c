"""Several replicas on one PostgreSQL: does the shared database serialise them?

    python bench/replica_bench.py [--seconds 10] [--conversations 64] [--latency 0.1]

First the engine figures for SQLite and PostgreSQL side by side (engine_bench's, at
10 and 1,000 stored messages), then 1, 2 and 3 replicas. Each replica is a process
of its own with its own Engine (model.max_concurrent_calls = 8, the default) on one
shared PostgreSQL database; together they carry `--conversations` conversations,
each sending its next message as soon as the last is answered, against a fake model
that takes `--latency` seconds per answer (a real model takes longer; the point is
that the model, not the database, bounds each replica). Printed: messages per second
for each replica count and its ratio to one replica.
Targets (issue 11): PostgreSQL engine p50 <= 3 ms, flat in history size; 2 replicas
>= 1.8x and 3 replicas >= 2.5x the messages per second of one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_bench import report, start_fake_model  # noqa: E402
from bench.stores import drop_schemas, fresh_url  # noqa: E402

# One replica: an Engine on the shared database driving its share of conversations.
REPLICA = """
import asyncio, json, sys, time
from bot.config import Settings
from bot.engine import Engine
from bot.llm import ModelClient
from bot.messages import Message
from bot.store import open_store

async def main(url, base_url, first, count, seconds, start):
    store = await open_store(url)
    model = ModelClient(api_key="bench", base_url=base_url, timeout_seconds=30,
                        max_attempts=1, retry_max_wait_seconds=1)
    settings = Settings(requests_per_minute=0, tokens_per_day=0, tools=())
    engine = Engine(settings, store, model)
    answered = 0
    deadline = start + seconds

    async def talk(channel):
        nonlocal answered
        number = 0
        while time.time() < deadline:
            number += 1
            message = Message("bench", "w", channel, f"u{channel}", f"Question {number}")
            async for _ in engine.handle(message):
                pass
            if time.time() <= deadline:
                answered += 1

    while time.time() < start:
        await asyncio.sleep(0.005)
    await asyncio.gather(*(talk(f"c{first + i}") for i in range(count)))
    await engine.close(); await model.close(); await store.close()
    print(json.dumps({"answered": answered}))

url, base_url, first, count, seconds, start = sys.argv[1:7]
asyncio.run(main(url, base_url, int(first), int(count), float(seconds), float(start)))
"""

# A fake model that takes `latency` seconds for every answer, in a process of its own.
SLOW_MODEL = """
import asyncio, sys
from tests.fakes.openai_server import FakeOpenAI

class Slow(FakeOpenAI):
    async def _chat(self, request):
        await asyncio.sleep(float(sys.argv[1]))
        return await super()._chat(request)

with Slow().run_in_thread() as fake:
    print(fake.base_url, flush=True); sys.stdin.read()
"""


def start_slow_model(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_MODEL, str(latency)], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def run_replicas(
    url: str, base_url: str, replicas: int, conversations: int, seconds: float
) -> tuple[float, float]:
    """Messages per second that `replicas` processes answer together, and their CPU
    time per message (ms, start-up included)."""
    cpu_before = _children_cpu()
    start = time.time() + 3  # every process imported and connected by then
    share = conversations // replicas
    processes = []
    for number in range(replicas):
        count = share if number < replicas - 1 else conversations - share * number
        arguments = [url, base_url, str(number * share), str(count), str(seconds), str(start)]
        command = [sys.executable, "-c", REPLICA, *arguments]
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=seconds + 60)[0] for process in processes]
    answered = sum(json.loads(output)["answered"] for output in outputs)
    return answered / seconds, (_children_cpu() - cpu_before) / max(1, answered) * 1000


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def engine_figures(messages: int) -> None:
    process, base_url = start_fake_model(None)
    try:
        with tempfile.TemporaryDirectory() as name:
            for kind in ("sqlite", "postgresql"):
                print(f"-- engine, {kind}")
                await report(kind, base_url, [10, 1000], messages, Path(name))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--engine-messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    try:
        if arguments.engine_messages:
            await engine_figures(arguments.engine_messages)
        model, base_url = start_slow_model(arguments.latency)
        print(f"-- replicas on one PostgreSQL: {arguments.conversations} conversations,"
              f" a {arguments.latency * 1000:.0f} ms model, 8 model calls per replica")  # fmt: skip
        rates: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 3: []}
        try:
            for _ in range(arguments.rounds):  # interleaved, so drift falls on all alike
                for count in rates:
                    url = await fresh_url("postgresql", Path("."), f"replicas{count}")
                    rates[count].append(
                        run_replicas(url, base_url, count, arguments.conversations,
                                     arguments.seconds)
                    )  # fmt: skip
        finally:
            assert model.stdin is not None
            model.stdin.close()
            model.wait(timeout=10)
        one = max(rate for rate, _ in rates[1])
        for count, measured in rates.items():
            best, cpu = max(measured)
            print(f"{count} replica{'s' if count > 1 else ' '}: {best:6.1f} msg/s"
                  f" (rounds {', '.join(f'{r:.1f}' for r, _ in measured)}) = {best / one:.2f}x;"
                  f" CPU {cpu:.1f} ms per message")  # fmt: skip
    finally:
        await drop_schemas()


if __name__ == "__main__":
    asyncio.run(main())
