"""Instructions per message under valgrind: a figure the machine's drift cannot move.

    python bench/instructions.py [--small 10] [--large 20]

On a shared machine the same code's CPU time per message varies by 1.5x from one run
to the next; the number of instructions it executes does not. This runs the
16-conversation part of engine_bench.py under callgrind twice, with `small` and then
`large` messages per conversation, and divides the difference by the extra messages,
so start-up and imports cancel out. It counts this process's user-space instructions
(the fake model runs outside valgrind). Needs valgrind; takes a few minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import start_fake_model

CONVERSATIONS = 16
CHILD = """
import asyncio, sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
from engine_bench import concurrent_rate
async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        await concurrent_rate({url!r}, Path(folder), {conversations}, {each}, rounds=1)
asyncio.run(main())
"""


def start_counting(url: str, each: int) -> subprocess.Popen[str]:
    code = CHILD.format(
        bench=str(Path(__file__).resolve().parent), url=url,
        conversations=CONVERSATIONS, each=each,
    )  # fmt: skip
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", code],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def collected(process: subprocess.Popen[str]) -> int:
    _, errors = process.communicate()
    match = re.search(r"Collected\s*:\s*([\d,]+)", errors)
    if process.returncode != 0 or match is None:
        raise SystemExit(f"callgrind failed:\n{errors[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10, help="messages per conversation")
    parser.add_argument("--large", type=int, default=20, help="messages per conversation")
    arguments = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    process, url = start_fake_model(None)
    try:
        # Both at once: each runs on its own core under valgrind.
        runs = [start_counting(url, each) for each in (arguments.small, arguments.large)]
        small, large = (collected(run) for run in runs)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)
    extra = (arguments.large - arguments.small) * CONVERSATIONS
    print(f"{(large - small) / extra / 1e6:.2f} million instructions per message")


if __name__ == "__main__":
    main()
