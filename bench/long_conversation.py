"""A long conversation's cost: trimming one message at a time versus in steps with a
rolling summary.

    python bench/long_conversation.py [--turns 300] [--context 8000]

One conversation of --turns questions goes through the real engine (SQLite store) and
the real SDK to the fake model of tests/fakes over a socket. The fake reports
cached_tokens as OpenAI computes them: the prefix a prompt shares with the previous
request of the same prompt_cache_key, if at least 1,024 tokens, in 128-token steps
(tokens counted with the o200k encoding, as the engine counts). Two policies at the
same context budget:
- one at a time: the engine as it was (context.trim_to = 1.0, no summary, no cache key):
  each turn past the budget drops the oldest message, so every prompt starts differently;
- in steps: context.trim_to = 0.6, summary.enabled, prompt_cache_key (the defaults).
Printed per policy: prompt tokens (chat and summary calls), the cached share overall and
at steady state (turns past the first third, when the context is full), input cost at
gpt-4o-mini prices (config/prices.toml: cached input at half price), the summary calls'
output cost, and the largest and median prompt.
Targets (issue #16): at steady state >= 70% of input cached; input cost (summary calls
included, their output too) >= 40% below one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import Settings
from bot.engine import Engine
from bot.llm import ModelClient
from bot.messages import Message
from bot.store.sqlite import SqliteStore
from bot.tokens import count_text
from bot.usage import Price, Prices
from tests.fakes.openai_server import FakeOpenAI, Text

MODEL = "gpt-4o-mini"
WORDS = (
    "deploy review budget latency cache schema replica migration incident rollout "
    "customer invoice feature flag sprint roadmap metric alert queue worker token "
    "prompt summary context thread channel release branch merge test coverage"
).split()


@dataclass(frozen=True)
class Figures:
    policy: str
    prompt_tokens: int
    cached_tokens: int
    steady_prompt: int
    steady_cached: int
    input_cost: float
    summary_output_cost: float
    summary_calls: int
    largest: int
    median: float
    seconds: float

    @property
    def billed(self) -> float:
        """What the comparison counts: all input, plus what summaries write."""
        return self.input_cost + self.summary_output_cost


def question(rng: random.Random, number: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))
    return f"Question {number}: what about {words}?"


def answer(rng: random.Random) -> Text:
    return Text(" ".join(rng.choice(WORDS) for _ in range(rng.randint(120, 220))) + ".")


async def run(policy: str, settings: Settings, turns: int, folder: Path) -> Figures:
    rng = random.Random(16)
    store = SqliteStore(folder / f"{policy.replace(' ', '-')}.db")
    async with FakeOpenAI() as fake:
        fake.count_tokens = count_text  # the o200k encoding, as the engine counts
        model = ModelClient(api_key="bench", base_url=fake.base_url, timeout_seconds=30,
                            max_attempts=1, retry_max_wait_seconds=1)  # fmt: skip
        engine = Engine(settings, store, model, prices=Prices.load("config/prices.toml"))
        started = time.perf_counter()
        for number in range(turns):
            fake.default = answer(rng)  # the summary calls get it too, cut to their budget
            message = Message("bench", "w", "c", "alice", question(rng, number))
            async for _ in engine.handle(message):
                pass
        seconds = time.perf_counter() - started
        await model.close()
        await engine.close()
    await store.close()
    return _figures(policy, folder / f"{policy.replace(' ', '-')}.db", turns, seconds)


def _figures(policy: str, path: Path, turns: int, seconds: float) -> Figures:
    price = Prices.load("config/prices.toml").prices[MODEL]
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT kind, prompt_tokens, cached_tokens, completion_tokens FROM usage ORDER BY id"
        ).fetchall()
    chat = [row for row in rows if row[0] == "chat"]
    summaries = [row for row in rows if row[0] == "summary"]
    # Steady state: once the context is full (past the first third of the turns).
    first_steady = len(chat) // 3
    steady_ids = {id(row) for row in chat[first_steady:]}
    steady = [row for row in rows if id(row) in steady_ids or (row[0] == "summary")]
    return Figures(
        policy,
        sum(r[1] for r in rows),
        sum(r[2] for r in rows),
        sum(r[1] for r in steady),
        sum(r[2] for r in steady),
        sum(_input_cost(price, r[1], r[2]) for r in rows),
        sum(r[3] * price.output / 1e6 for r in summaries),
        len(summaries),
        max(r[1] for r in chat),
        statistics.median(r[1] for r in chat),
        seconds,
    )


def _input_cost(price: Price, prompt: int, cached: int) -> float:
    return ((prompt - cached) * price.input + cached * price.cached_input) / 1e6


def show(figures: Figures) -> None:
    print(
        f"{figures.policy:<12} prompt tokens {figures.prompt_tokens:>10,}"
        f"  cached {100 * figures.cached_tokens / figures.prompt_tokens:5.1f}%"
        f" (steady {100 * figures.steady_cached / figures.steady_prompt:5.1f}%)"
        f"  input ${figures.input_cost:.4f} + summaries' output ${figures.summary_output_cost:.4f}"
        f" = ${figures.billed:.4f}  summary calls {figures.summary_calls:>3}"
        f"  prompt max {figures.largest:,} median {figures.median:,.0f}"
        f"  ({figures.seconds:.1f} s)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--context", type=int, default=8000, help="model.context_tokens")
    arguments = parser.parse_args()
    base = Settings(model=MODEL, context_tokens=arguments.context, reply_tokens=1000,
                    requests_per_minute=0, tokens_per_day=0, tools=())  # fmt: skip
    old = replace(base, trim_to=1.0, summary_enabled=False, prompt_cache_key=False)
    print(f"{arguments.turns} turns, context {arguments.context:,} tokens, {MODEL} prices")
    with tempfile.TemporaryDirectory() as folder:
        before = await run("one at a time", old, arguments.turns, Path(folder))
        after = await run("in steps", base, arguments.turns, Path(folder))
    show(before)
    show(after)
    saved = 1 - after.billed / before.billed
    print(
        f"in steps vs one at a time: billed input {-100 * saved:+.1f}%"
        f" (target <= -40%), steady cached {100 * after.steady_cached / after.steady_prompt:.1f}%"
        " (target >= 70%)"
    )


if __name__ == "__main__":
    asyncio.run(main())
