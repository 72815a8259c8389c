"""Several `python -m bot run slack` processes on one PostgreSQL database, as a team
runs replicas behind a load balancer: the fake Slack and the fake model run in the
test's own event loop, the bots in subprocesses, everything over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import EventSender, FakeSlack
from tests.slack_helpers import SECRET, TOKEN
from tests.test_run import free_port

ROOT = Path(__file__).resolve().parent.parent
# How long a test waits for what other processes do (start, answer, recover).
WAIT = 30.0


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    sender: EventSender
    log: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class Cluster:
    slack: FakeSlack
    model: FakeOpenAI
    replicas: list[Replica] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(r.log.read_text(errors="replace") for r in self.replicas)


async def healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until a started Parley answers /health with 200 (fails if it exits first)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(f"a replica exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("a replica did not become healthy within 30 s")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "slack"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def cluster(
    count: int, database: str, folder: Path, config: str = "", **environment: str
) -> AsyncIterator[Cluster]:
    """`count` replicas sharing `database`; extra config sections and environment
    apply to all."""
    async with FakeSlack() as slack, FakeOpenAI() as model:
        group = Cluster(slack, model)
        # A short lease, so a killed replica's conversation moves on within seconds; not
        # shorter: on a loaded CI machine a live replica missed renewing a 1 s lease, and
        # another answered its turn again.
        config_file = folder / "replicas.toml"
        config_file.write_text("[store]\nlease_seconds = 3.0\n" + config)
        try:
            for number in range(count):
                port = free_port()
                env = {
                    "PATH": os.environ.get("PATH", ""), "HOME": str(folder),
                    "PARLEY_CONFIG": str(config_file), "PARLEY_DB": database, "PORT": str(port),
                    "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                    "PARLEY_SLACK_API_URL": slack.api_url, "OPENAI_API_KEY": "test",
                    "OPENAI_BASE_URL": model.base_url, "PARLEY_RATE_PER_MINUTE": "0",
                    "PARLEY_TOKENS_PER_DAY": "0", **environment,
                }  # fmt: skip
                log = folder / f"replica{number}.log"
                process = _start(env, log)
                url = f"http://127.0.0.1:{port}/slack/events"
                group.replicas.append(Replica(process, port, EventSender(url, SECRET), log))
            for replica in group.replicas:
                await healthy(replica.port, replica.process)
            yield group
        finally:
            for replica in group.replicas:
                if replica.process.poll() is None:
                    replica.process.terminate()
            for replica in group.replicas:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.process.wait(timeout=20)
                if replica.process.poll() is None:
                    replica.kill()
