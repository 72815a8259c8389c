"""python -m bot run, as the README's first command starts it on a fresh machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_health(port: int, process: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                return dict(json.load(reply))
        except OSError:
            time.sleep(0.1)
    raise AssertionError("Parley did not answer /health within 30 s")


@pytest.mark.parametrize("verbose", [False, True])
def test_run_without_tokens_starts_the_web_chat_and_says_so(
    tmp_path: Path, verbose: bool
) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "PORT": str(port),
        "PARLEY_DB": str(tmp_path / "run.db"), "HOME": str(tmp_path),
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", *(["-v"] if verbose else [])], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        health = wait_for_health(port, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert "<html" in page.read().decode().lower()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=5)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0  # SIGTERM is a clean stop
    assert health["status"] == "ok"
    assert health["adapters"] == {"web": True}
    assert "starts its local web chat" in stderr
    assert "SLACK_BOT_TOKEN" in stderr and "DISCORD_BOT_TOKEN" in stderr
    # A line per HTTP request only when asked for (probes would drown the log); one
    # for a request that went wrong always.
    assert ('"GET /health HTTP/1.1" 200' in stderr) is verbose
    assert '"GET /no-such-page HTTP/1.1" 404' in stderr


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["run", "telegram"], "unknown adapter telegram"),
        (["run", "slack"], "Slack: set SLACK_BOT_TOKEN"),
        (["run", "discord"], "Discord: set DISCORD_BOT_TOKEN"),
    ],
)
def test_run_refuses_what_it_cannot_start(
    tmp_path: Path, arguments: list[str], expected: str
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PARLEY_DB": str(tmp_path / "x.db")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", *arguments], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
