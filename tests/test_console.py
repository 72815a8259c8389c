"""python -m bot chat as a user runs it: a real subprocess against the fake model."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.commands import BECOME_ADMIN
from tests.fakes.openai_server import FakeOpenAI, Status


@pytest.fixture
def model_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().run_in_thread() as fake:
        yield fake


def run_chat(
    fake: FakeOpenAI,
    tmp_path: Path,
    lines: str,
    *arguments: str,
    verbose: bool = False,
    **environ: str,
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test-secret-value",
        "PARLEY_DB": str(tmp_path / "chat.db"),
        "PARLEY_CONFIG": str(Path("config/parley.toml").resolve()),
        **environ,
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", *(["-v"] if verbose else []), "chat", *arguments],
        input=lines,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_each_line_is_a_message_and_each_reply_is_printed_whole(
    model_server: FakeOpenAI, tmp_path: Path
) -> None:
    result = run_chat(model_server, tmp_path, "hello\nhow are you?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["parley> echo: hello", "parley> echo: how are you?"]


@pytest.mark.parametrize("command", ["/quit", "/exit", "  /exit  "])
def test_quit_ends_the_chat_and_nothing_after_it_is_asked(
    model_server: FakeOpenAI, tmp_path: Path, command: str
) -> None:
    result = run_chat(model_server, tmp_path, f"hello\n{command}\nstill there?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["parley> echo: hello"]
    assert len(model_server.requests) == 1


def test_history_survives_a_restart(model_server: FakeOpenAI, tmp_path: Path) -> None:
    run_chat(model_server, tmp_path, "first\n", "--user", "ann")
    run_chat(model_server, tmp_path, "second\n", "--user", "ann")
    contents = [m["content"] for m in model_server.requests[-1]["messages"]]
    assert contents[1:] == ["first", "echo: first", "second"]


def test_user_and_channel_pick_the_conversation(model_server: FakeOpenAI, tmp_path: Path) -> None:
    run_chat(model_server, tmp_path, "in general\n", "--channel", "general")
    run_chat(model_server, tmp_path, "in random\n", "--channel", "random")
    contents = [m["content"] for m in model_server.requests[-1]["messages"]]
    assert contents[1:] == ["in random"]


def test_commands_and_errors_print_clearly(model_server: FakeOpenAI, tmp_path: Path) -> None:
    model_server.script(Status(400))
    result = run_chat(model_server, tmp_path, "hi\n/limits\n/help\n", "--user", "bob")
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "parley! The model rejected this request. If the conversation is long, try /reset."
    )
    assert lines[1] == "parley! Sorry, only Parley admins can use /limits." + BECOME_ADMIN
    assert "/reset" in result.stdout
    assert result.returncode == 0


def test_admin_sees_usage(model_server: FakeOpenAI, tmp_path: Path) -> None:
    result = run_chat(
        model_server, tmp_path, "hi\n/usage 1d\n", "--user", "root", PARLEY_ADMINS="console:root"
    )
    assert "console:root" in result.stdout
    assert "requests" in result.stdout


def test_secrets_never_reach_the_output(model_server: FakeOpenAI, tmp_path: Path) -> None:
    result = run_chat(model_server, tmp_path, "hi\n", verbose=True)
    assert result.returncode == 0 and "echo: hi" in result.stdout  # it really ran
    assert "sk-test-secret-value" not in result.stdout + result.stderr


def chat_on_terminal(
    fake: FakeOpenAI, tmp_path: Path, stderr: int = subprocess.DEVNULL
) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m bot chat` on a pseudo-terminal, as a person runs it: the process and
    the terminal's other end, to type into and read from."""
    import pty

    leader, follower = pty.openpty()
    env = {
        "PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": fake.base_url,
        "PARLEY_DB": str(tmp_path / "tty.db"), "TERM": "dumb",
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "chat", "--user", "tty"],
        stdin=follower, stdout=follower, stderr=stderr, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    os.close(follower)
    return process, leader


@pytest.mark.parametrize("interval", [0.0, 0.2], ids=["one piece", "streamed"])
def test_interactive_terminal_streams_the_answer(
    model_server: FakeOpenAI, tmp_path: Path, interval: float
) -> None:
    # Streamed, the first word shows at once and the last ones come with the end of the
    # answer: either way the terminal shows the answer once, on one line.
    import select

    from tests.fakes.openai_server import Text

    model_server.script(Text("one two three four", interval=interval))
    process, leader = chat_on_terminal(model_server, tmp_path)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, f"timed out waiting for {marker!r}; got {seen!r}"
            seen += os.read(leader, 4096)

    read_until(b"you> ")
    os.write(leader, b"hello\n")
    read_until(b"four\r\nyou> ")  # the answer ends its line, then the next prompt
    os.write(leader, b"\x04")  # end of input
    process.wait(timeout=30)
    os.close(leader)
    assert b"\xe2\x80\xa6 thinking\xe2\x80\xa6" in seen  # the status showed first
    assert b"parley> one two three four\r\n" in seen
    assert seen.count(b"you> ") == 2 and seen.count(b"two") == seen.count(b"four") == 1


def test_the_chat_ends_when_its_terminal_goes_away(
    model_server: FakeOpenAI, tmp_path: Path
) -> None:
    # The terminal closed under it (its window, an ssh session): reading it fails with
    # EIO, which ends the chat like end of input, rather than leaving it running for ever.
    process, leader = chat_on_terminal(model_server, tmp_path, stderr=subprocess.PIPE)
    seen = b""
    while b"you> " not in seen:
        seen += os.read(leader, 4096)
    os.close(leader)
    try:
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert b"Traceback" not in errors


def test_usage_chart_is_saved_to_a_file(model_server: FakeOpenAI, tmp_path: Path) -> None:
    result = run_chat(
        model_server, tmp_path, "hi\n/usage chart 1d\n", "--user", "root",
        PARLEY_ADMINS="console:root", TMPDIR=str(tmp_path),
    )  # fmt: skip
    saved = result.stdout.splitlines()[-1]
    assert saved.startswith("(picture saved to ") and saved.endswith(".png)")
    assert Path(saved[len("(picture saved to ") : -1]).read_bytes().startswith(b"\x89PNG")


def test_env_file_in_the_working_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_BOT_TOKEN=from-dotenv\n")
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, capture_output=True, text=True,
        env={"PATH": os.environ.get("PATH", ""),
             "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        timeout=60,
    )  # fmt: skip
    assert "Discord: ready" in result.stdout
    assert "from-dotenv" not in result.stdout + result.stderr
