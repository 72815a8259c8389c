"""Instructions per streamed chunk, per platform, under valgrind: what drift cannot move.

    python bench/platform_instructions.py [--platforms slack,discord,web,console] [--count 12]
                                          [--one-piece] [--history N] [--whole] [--root DIR]
                                          [--rate 10]

For each platform and kind of answer, two bot processes run under callgrind at once, on
the fakes of bench/platform_bench.py: both seed a conversation with 10 messages
(--history; --whole carries them all in the prompt), then one answers `count` questions
and the other 2 x `count`, one after another; the difference, divided by `count`, is
what one answer costs (start-up and imports cancel out: in one piece exact, whatever
the machine does). Answers come in one piece, or streamed a word a chunk at --rate
chunks a second (10 unless told), read at the platform's pace as outside valgrind,
idle timers during the stream included; how many chunks each read finds depends on
timing (valgrind slows the bot about fifty times), so streamed figures are close, not
exact. The streamed answer's extra instructions over one in one piece, divided by the
extra chunks, are what a streamed chunk costs. If the two processes' conversations
were trimmed and summarised a different number of times (a model call more each: at
the defaults every 20 answers once 100 messages are held), it says so: use a smaller
--count. Needs valgrind; several minutes per platform.

--one-piece counts only what one answer in one piece costs. --root runs the bots of
another checkout (git worktree add DIR COMMIT): the counts of two versions compare
exactly, whatever the machine was doing meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from platform_bench import ANSWER, CHUNKS, ROOT, Bot, Host, start_bot, summaries_asked

RATE = 10.0  # streamed chunks a second, unless told
CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


async def counted(
    platform: str, interval: float, count: int, folder: Path, root: Path = ROOT,
    history: int = 10, whole: bool = False,
) -> tuple[int, int]:  # fmt: skip
    """Instructions of one bot process that answers `count` questions, one after
    another, after `history` messages, and the rolling summaries it asked for;
    `whole`: the history carried whole (platform_bench's NAME-whole); `interval`:
    seconds between streamed chunks (0: the answer in one piece)."""
    model = await Host.start("model", None)
    slack = await Host.start("slack", None) if platform == "slack" else None
    name = f"{platform}-{'streamed' if interval else 'one'}-{count}"
    bot: Bot | None = None
    try:
        await model.ask(interval=interval, text=ANSWER)
        bot = await start_bot(
            platform, folder / name, model.hello["url"], None, prefix=CALLGRIND, slack=slack,
            guilds=2, root=root, whole=whole,
        )  # fmt: skip
        conversation = await bot.new_conversation()
        await model.ask(interval=0.0, text=ANSWER)
        await bot.ask(conversation, history // 2)
        await model.ask(interval=interval, text=ANSWER)
        await bot.ask(conversation, count)
        summaries = await summaries_asked(model)
    finally:
        if bot is not None:
            await bot.stop()
            if bot.host is not None and bot.host is not slack:
                await bot.host.close()
        if slack is not None:
            await slack.close()
        await model.close()
    assert bot is not None and bot.log is not None
    errors = bot.log.read_text(errors="replace")
    match = re.search(r"Collected\s*:\s*([\d,]+)", errors)
    if match is None:
        raise SystemExit(f"callgrind failed for {name}:\n{errors[-2000:]}")
    return int(match.group(1).replace(",", "")), summaries


async def per_answer(
    platform: str, interval: float, count: int, folder: Path, root: Path, history: int,
    whole: bool,
) -> float:  # fmt: skip
    """Instructions per answer: two processes answering `count` and 2 x `count`."""
    kind = "streamed" if interval else "one"
    for sub in (count, 2 * count):
        (folder / f"{platform}-{kind}-{sub}").mkdir()
    (fewer, summarised), (more, summarised_more) = await asyncio.gather(
        counted(platform, interval, count, folder, root, history, whole),
        counted(platform, interval, 2 * count, folder, root, history, whole),
    )
    if summarised != summarised_more:
        print(f"{platform}: {summarised_more - summarised} rolling summaries more in the run of"
              f" {2 * count} {kind} answers than in that of {count}: counted in the figure "
              "below (a smaller --count avoids it)", flush=True)  # fmt: skip
    return (more - fewer) / count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--platforms", default="slack,discord,web,console")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--keep", help="a folder to keep the bots' logs and databases in")
    parser.add_argument("--one-piece", action="store_true", help="instructions per answer")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--history", type=int, default=10, help="messages before (even)")
    parser.add_argument("--whole", action="store_true", help="the history carried whole")
    parser.add_argument("--rate", type=float, default=RATE, help="chunks a second")
    arguments = parser.parse_args()
    os.environ["PYTHONHASHSEED"] = "0"  # the same hashing in both runs
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    count, root = arguments.count, arguments.root
    for platform in arguments.platforms.split(","):
        with tempfile.TemporaryDirectory() as name:
            folder = Path(arguments.keep or name)
            where = (folder, root, arguments.history, arguments.whole)
            one = await per_answer(platform, 0.0, count, *where)
            if arguments.one_piece:
                print(f"{platform:<8} {one / 1e6:>8.2f} million instructions per answer in "
                      "one piece", flush=True)  # fmt: skip
                continue
            streamed = await per_answer(platform, 1 / arguments.rate, count, *where)
        print(f"{platform:<8} {(streamed - one) / (CHUNKS - 1) / 1e3:>8.0f} thousand instructions"
              f" per streamed chunk at {arguments.rate:g}/s ({one / 1e6:.2f} million per answer "
              f"in one piece, {streamed / 1e6:.2f} streamed)", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
