"""Instructions per streamed chunk, per platform, under valgrind: what drift cannot move.

    python bench/platform_instructions.py [--platforms slack,discord,web,console] [--count 8]
                                          [--one-piece] [--history N] [--whole] [--root DIR]

For each platform, two bot processes run under callgrind at once, on the fakes of
bench/platform_bench.py: one gets every answer in one piece, the other the same answer
streamed a word a chunk (10 chunks a second: slow enough that the bot, slowed by
valgrind, still reads every chunk on its own). Both start, seed a conversation with 10
messages (--history; --whole carries them all in the prompt) and answer `count`
questions, the first waiting after each answer as long as a streamed one takes; the
difference in instructions, divided by the extra chunks, is what one streamed chunk
costs the bot's process, with its share of the throttled platform edits. Start-up,
imports and idle timers cancel out. Needs valgrind; a few minutes per platform.

--one-piece counts instead what one answer in one piece costs: two processes answer
`count` and 2 x `count` questions in one piece, and the difference is divided by
`count`. --root runs the bots of another checkout (git worktree add DIR COMMIT): the
counts of two versions compare exactly, whatever the machine was doing meanwhile.
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

from platform_bench import ANSWER, CHUNKS, ROOT, Bot, Host, start_bot

PACE = 1 / 10
CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


async def counted(
    platform: str, interval: float, count: int, folder: Path, root: Path = ROOT,
    alone: bool = False, history: int = 10, whole: bool = False,
) -> int:  # fmt: skip
    """Instructions of one bot process that answers `count` questions after `history`
    messages; `alone`: one after another, with no pause as long as a streamed answer
    between; `whole`: the history carried whole (platform_bench's NAME-whole)."""
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
        for _ in range(history // 2 + count):  # the history, then the questions
            await bot.ask(conversation, 1)
            if not interval and not alone:
                # As long as a streamed answer takes: what an idle process does meanwhile
                # (timers, keep-alives) then counts in both runs alike and cancels out.
                await asyncio.sleep(CHUNKS * PACE)
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
    return int(match.group(1).replace(",", ""))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--platforms", default="slack,discord,web,console")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--keep", help="a folder to keep the bots' logs and databases in")
    parser.add_argument("--one-piece", action="store_true", help="instructions per answer")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--history", type=int, default=10, help="messages before (even)")
    parser.add_argument("--whole", action="store_true", help="the history carried whole")
    arguments = parser.parse_args()
    os.environ["PYTHONHASHSEED"] = "0"  # the same hashing in both runs
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    count, root = arguments.count, arguments.root
    for platform in arguments.platforms.split(","):
        with tempfile.TemporaryDirectory() as name:
            folder = Path(arguments.keep or name)
            size, whole = arguments.history, arguments.whole
            if arguments.one_piece:
                for sub in (count, 2 * count):
                    (folder / f"{platform}-one-{sub}").mkdir()
                fewer, more = await asyncio.gather(
                    counted(platform, 0.0, count, folder, root, True, size, whole),
                    counted(platform, 0.0, 2 * count, folder, root, True, size, whole),
                )
                print(f"{platform:<8} {(more - fewer) / count / 1e6:>8.2f} million instructions "
                      f"per answer in one piece", flush=True)  # fmt: skip
                continue
            for sub in ("one", "streamed"):
                (folder / f"{platform}-{sub}-{count}").mkdir()
            one, streamed = await asyncio.gather(
                counted(platform, 0.0, count, folder, root, False, size, whole),
                counted(platform, PACE, count, folder, root, False, size, whole),
            )
        extra = arguments.count * (CHUNKS - 1)
        print(f"{platform:<8} {(streamed - one) / extra / 1e3:>8.0f} thousand instructions "
              f"per streamed chunk ({one / 1e9:.2f} and {streamed / 1e9:.2f} billion in all)",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
