"""What one wake-up from idle costs this machine: the floor under a streamed answer.

    python bench/wake_cost.py

A process that sleeps and is woken again pays CPU for it (the kernel's wake-up path,
and on a virtual machine the exits and cold caches after idling) before it runs a
line of its own. A bot streaming an answer is woken a few times per answer
(bench/platform_bench.py prints how often); at 25 chunks a second this, not the work
per chunk, is most of what a streamed answer costs over one in one piece. Prints the
CPU (user + sys, from /proc/self/schedstat) per wake-up of a bare sleep, of an idle
asyncio loop woken by a timer, and of a loop woken by a socket, at several periods.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

PERIODS = (0.01, 0.04, 0.5, 1.5)


def cpu_ns() -> int:
    return int(Path("/proc/self/schedstat").read_text().split()[0])


def wakes(period: float) -> int:
    return max(4, min(200, int(4 / period)))


def bare_sleep(period: float) -> float:
    count = wakes(period)
    before = cpu_ns()
    for _ in range(count):
        time.sleep(period)
    return (cpu_ns() - before) / count / 1000


async def timer_wake(period: float) -> float:
    count = wakes(period)
    before = cpu_ns()
    for _ in range(count):
        await asyncio.sleep(period)
    return (cpu_ns() - before) / count / 1000


async def socket_wake(period: float) -> float:
    """Woken by bytes on a socket (as by a model's chunk), sent by a thread."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    count = wakes(period)

    def send() -> None:
        for _ in range(count):
            time.sleep(period)
            theirs.send(b"x")

    sender = loop.run_in_executor(None, send)
    await asyncio.sleep(0)
    before = cpu_ns()
    for _ in range(count):
        await loop.sock_recv(ours, 16)
    spent = cpu_ns() - before
    await sender
    ours.close()
    theirs.close()
    # The sender thread's CPU counts in the thread's own schedstat, not in ours.
    return spent / count / 1000


def main() -> None:
    print(f"{'period':>8}  {'bare sleep':>12}  {'asyncio timer':>14}  {'asyncio socket':>15}")
    for period in PERIODS:
        bare = bare_sleep(period)
        timer = asyncio.run(timer_wake(period))
        woken = asyncio.run(socket_wake(period))
        print(f"{period * 1000:>6.0f} ms  {bare:>9.0f} µs  {timer:>11.0f} µs  {woken:>12.0f} µs")


if __name__ == "__main__":
    main()
