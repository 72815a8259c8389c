"""What the access lists cost per message: AccessControl.check on SQLite and PostgreSQL.

    python bench/access_bench.py [--rounds 3000]

The check reads the database's entries on every message (so that a change made in
another process applies to the next message) and judges them with the config lists.
Printed: microseconds per check, with an empty table and with 20 and 200 entries, and
for an admin (no database read at all). Others' work on the machine disturbs the
figures; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stores import drop_schemas, fresh_store
from bot.access import AccessControl
from bot.commands import is_admin
from bot.config import Settings
from bot.messages import Message
from bot.metrics import Metrics

ASKER = Message("slack", "T1", "C1", "U1", "hello")
ADMIN = Message("slack", "T1", "C1", "UADMIN", "hello")


async def _per_check(control: AccessControl, message: Message, rounds: int) -> float:
    """Median of five batches, microseconds per check."""
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds // 5):
            verdict = await control.check(message)
            assert verdict.allowed
        batches.append((time.perf_counter() - started) / (rounds // 5) * 1e6)
    return statistics.median(batches)


async def bench(kind: str, folder: Path, rounds: int) -> None:
    store = await fresh_store(kind, folder, "access")
    settings = Settings(admins=("slack:UADMIN",))
    control = AccessControl(store, lambda: settings, is_admin, Metrics())
    try:
        shown = [f"admin {await _per_check(control, ADMIN, rounds):7.1f}"]
        added = 0
        for size in (0, 20, 200):
            while added < size:
                await store.set_access("block", "user", f"slack:UBLOCKED{added}")
                added += 1
            shown.append(f"{size:3} entries {await _per_check(control, ASKER, rounds):7.1f}")
        print(f"{kind:<10} µs per check: " + ", ".join(shown))
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("sqlite", "postgresql"):
            await bench(kind, Path(folder), arguments.rounds)
    await drop_schemas()


if __name__ == "__main__":
    asyncio.run(main())
