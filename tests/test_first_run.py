"""The first five minutes, as a new user meets them: `python -m bot` started as a
subprocess; every start-up fault is one line naming the setting, exit code 2, no
traceback; `check` against the fakes names each broken part."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Status
from tests.fakes.slack_server import FakeSlack

ROOT = Path(__file__).resolve().parent.parent


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no key, no tokens, no local-server search, unless given."""
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
        "PARLEY_DB": str(tmp_path / "parley.db"), "PORT": str(free_port()),
        "PARLEY_LOCAL_MODEL_URLS": "",
    }  # fmt: skip
    return env | extra


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parley(
    env: dict[str, str], *arguments: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *arguments], env=env, cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def parley_async(env: dict[str, str], *arguments: str) -> tuple[int, str, str]:
    """For fakes served by this test's event loop while Parley runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *arguments, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_fault(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Parley cannot")]
    lines += [line for line in result.stderr.splitlines() if line.startswith("Configuration")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# -- start-up faults ---------------------------------------------------------------


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = parley(environment(tmp_path, PORT=str(port)), "run", "web")
    assert_one_line_fault(result, f"PORT {port} is already in use", "set PORT")


@pytest.mark.parametrize("port", ["70000", "0", "http"])
def test_a_port_out_of_range_is_one_line(tmp_path: Path, port: str) -> None:
    result = parley(environment(tmp_path, PORT=port), "run", "web")
    assert_one_line_fault(result, "PORT", "1 to 65535")


def test_a_database_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    result = parley(environment(tmp_path, PARLEY_DB=str(tmp_path)), "run", "web")
    assert_one_line_fault(result, "PARLEY_DB", "is a folder", "parley.db")


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database at all, " * 100)
    result = parley(environment(tmp_path, PARLEY_DB=str(notes)), "run", "web")
    assert_one_line_fault(result, "PARLEY_DB", "not a SQLite database")


def test_a_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the database's folder should be
    result = parley(environment(tmp_path, PARLEY_DB=str(blocker / "sub" / "p.db")), "run")
    assert_one_line_fault(result, "PARLEY_DB", "cannot create the folder")


@pytest.fixture
def read_only_database(tmp_path: Path) -> Iterator[Path]:
    """A database file nobody may write, root included (immutable when run as root)."""
    path = tmp_path / "ro.db"
    sqlite3.connect(path).close()
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield path
        path.chmod(0o644)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no file is read-only to root")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here: {made.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_database_fails_at_start_not_on_every_message(
    tmp_path: Path, read_only_database: Path
) -> None:
    env = environment(tmp_path, PARLEY_DB=str(read_only_database))
    assert_one_line_fault(parley(env, "run", "web"), "PARLEY_DB", "read-only")
    assert_one_line_fault(parley(env, "chat", stdin="hello\n"), "read-only")


def test_a_database_on_a_read_only_file_system_is_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        sqlite3.connect(mount / "p.db").close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        result = parley(environment(tmp_path, PARLEY_DB=str(mount / "p.db")), "run", "web")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert_one_line_fault(result, "PARLEY_DB", "read-only")


@pytest.mark.parametrize(
    ("variables", "missing"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "neither SLACK_SIGNING_SECRET"),
        ({"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN is not"),
    ],
)
def test_half_set_slack_is_one_line_not_a_silent_web_chat(
    tmp_path: Path, variables: dict[str, str], missing: str
) -> None:
    result = parley(environment(tmp_path, **variables), "run")
    assert_one_line_fault(result, "Slack", missing)
    assert "starts its local web chat" not in result.stderr


# -- the model ---------------------------------------------------------------------


def test_no_model_set_warns_once_and_each_message_says_what_to_set(tmp_path: Path) -> None:
    result = parley(environment(tmp_path), "chat", stdin="hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("No model endpoint is set") == 1
    assert "OPENAI_API_KEY" in result.stderr and "OPENAI_BASE_URL" in result.stderr
    assert result.stdout.startswith("parley! No model is set up yet")
    assert "OPENAI_BASE_URL" in result.stdout


def test_status_does_not_call_chats_ready_without_a_model(tmp_path: Path) -> None:
    result = parley(environment(tmp_path))
    assert "Console chat: starts, but answers only once a model endpoint is set" in result.stdout
    ready = environment(tmp_path, OPENAI_API_KEY="sk-x")
    assert "Console chat: ready" in parley(ready).stdout


def test_a_local_server_is_found_and_said(tmp_path: Path) -> None:
    with FakeOpenAI(models=("llama3.2",)).run_in_thread() as fake:
        env = environment(
            tmp_path, PARLEY_LOCAL_MODEL_URLS=f"http://127.0.0.1:9/v1,{fake.base_url}"
        )
        result = parley(env, "chat", stdin="hello\n")
    assert result.returncode == 0, result.stderr
    assert f"found a server at {fake.base_url}, using model llama3.2" in result.stderr
    assert result.stdout == "parley> echo: hello\n"
    assert fake.requests[-1]["model"] == "llama3.2"


@pytest.mark.parametrize(
    ("status", "words", "log"),
    [
        (401, "refused Parley's key; an admin should check OPENAI_API_KEY", "auth: HTTP 401"),
        (404, "no model named gpt-4o-mini; an admin should set PARLEY_MODEL", "HTTP 404"),
        (302, "no chat API at its URL; an admin should check OPENAI_BASE_URL", "HTTP 302"),
    ],
)
def test_model_failures_name_the_cause_and_the_setting(
    tmp_path: Path, status: int, words: str, log: str
) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        fake.script(Status(status))
        result = parley(environment(tmp_path, OPENAI_BASE_URL=fake.base_url), "chat", stdin="hi\n")
    assert words in result.stdout
    assert "/reset" not in result.stdout
    assert log in result.stderr and fake.base_url in result.stderr  # the URL, in the log only
    assert fake.base_url not in result.stdout


# -- flags ---------------------------------------------------------------------------


def test_flags_work_after_the_subcommand_and_version(tmp_path: Path) -> None:
    assert parley(environment(tmp_path), "--version").stdout.startswith("Parley ")
    db = tmp_path / "other.db"
    result = parley(environment(tmp_path), "usage", "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert db.exists()
    with FakeOpenAI().run_in_thread() as fake:
        env = environment(tmp_path, OPENAI_BASE_URL=fake.base_url)
        parley(env, "chat", "--model", "picked-after", "-v", stdin="hi\n")
    assert fake.requests[-1]["model"] == "picked-after"


# -- check ---------------------------------------------------------------------------


def items(out: str) -> dict[str, dict[str, object]]:
    return {item["name"]: item for item in json.loads(out)}


async def test_check_passes_when_all_is_well(tmp_path: Path) -> None:
    async with FakeOpenAI() as model, FakeSlack() as slack:
        discord = FakeDiscord()
        await discord.start()
        try:
            env = environment(
                tmp_path, OPENAI_BASE_URL=model.base_url, SLACK_BOT_TOKEN="xoxb-t",
                SLACK_SIGNING_SECRET="s", PARLEY_SLACK_API_URL=slack.api_url,
                DISCORD_BOT_TOKEN="d", PARLEY_DISCORD_API_URL=discord.api_url,
            )  # fmt: skip
            code, out, err = await parley_async(env, "check")
        finally:
            await discord.stop()
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines and all(line.startswith("✓ ") for line in lines), out
    names = [line.split(":")[0][2:] for line in lines]
    assert names == [
        "config", "database", "model endpoint", "model key", "model exists", "slack mode",
        "slack token", "slack scopes", "discord token", "discord application",
        "discord message content intent", "http port",
    ]  # fmt: skip
    assert "cost" in out and "e-0" not in out


@pytest.mark.parametrize(
    ("status", "failed"),
    [(None, "model endpoint"), (401, "model key"), (404, "model exists")],
)
async def test_check_names_the_broken_model_part(
    tmp_path: Path, status: int | None, failed: str
) -> None:
    async with FakeOpenAI() as model:
        url = model.base_url if status else f"http://127.0.0.1:{free_port()}/v1"
        if status:
            model.script(Status(status))
        env = environment(tmp_path, OPENAI_BASE_URL=url)
        code, out, _ = await parley_async(env, "check", "--format", "json")
    assert code == 1
    found = items(out)
    assert found[failed]["ok"] is False
    assert next(name for name, item in found.items() if not item["ok"]) == failed


async def test_check_names_a_missing_slack_scope(tmp_path: Path) -> None:
    async with FakeOpenAI() as model, FakeSlack() as slack:
        slack.scopes.remove("files:write")
        env = environment(
            tmp_path, OPENAI_BASE_URL=model.base_url, SLACK_BOT_TOKEN="xoxb-t",
            SLACK_APP_TOKEN="xapp-1", PARLEY_SLACK_API_URL=slack.api_url,
        )  # fmt: skip
        code, out, _ = await parley_async(env, "check", "--format", "json")
    assert code == 1
    scopes = items(out)["slack scopes"]
    assert scopes["ok"] is False and "missing files:write" in str(scopes["detail"])


async def test_check_names_a_missing_discord_intent(tmp_path: Path) -> None:
    async with FakeOpenAI() as model:
        discord = FakeDiscord()
        discord.application_flags = 0
        await discord.start()
        try:
            env = environment(
                tmp_path, OPENAI_BASE_URL=model.base_url, DISCORD_BOT_TOKEN="d",
                PARLEY_DISCORD_API_URL=discord.api_url,
            )  # fmt: skip
            code, out, _ = await parley_async(env, "check", "--format", "json")
        finally:
            await discord.stop()
    assert code == 1
    intent = items(out)["discord message content intent"]
    assert intent["ok"] is False and "Message Content Intent" in str(intent["detail"])


async def test_check_names_a_busy_port_and_a_read_only_database(
    tmp_path: Path, read_only_database: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with FakeOpenAI() as model:
            env = environment(
                tmp_path, OPENAI_BASE_URL=model.base_url, PORT=str(taken.getsockname()[1]),
                PARLEY_DB=str(read_only_database),
            )  # fmt: skip
            code, out, _ = await parley_async(env, "check", "--format", "json")
    assert code == 1
    found = items(out)
    assert found["http port"]["ok"] is False and "in use" in str(found["http port"]["detail"])
    assert found["database"]["ok"] is False and "read-only" in str(found["database"]["detail"])
    assert found["model exists"]["ok"] is True


# -- Discord login -------------------------------------------------------------------


async def test_an_unreachable_discord_api_is_one_line_and_an_exit(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}/api/v10"
    env = environment(
        tmp_path, DISCORD_BOT_TOKEN="d", PARLEY_DISCORD_API_URL=api,
        PARLEY_DISCORD_GATEWAY_URL="ws://127.0.0.1:9/", PARLEY_DISCORD_LOGIN_RETRY_SECONDS="1.5",
    )  # fmt: skip
    code, _, err = await parley_async(env, "run", "discord")
    assert code == 2 and "Traceback" not in err, err
    assert f"Parley cannot start: Discord's API at {api} cannot be reached" in err
    assert "discord.login_retry_seconds" in err
    assert "Discord login failed" in err  # it was retried first


async def test_a_refused_discord_token_is_explained_and_the_process_exits(tmp_path: Path) -> None:
    discord = FakeDiscord()
    await discord.start()
    try:
        discord.fail("GET", r"/users/@me", 401, code=0, times=10)
        env = environment(
            tmp_path, DISCORD_BOT_TOKEN="wrong", PARLEY_DISCORD_API_URL=discord.api_url,
            PARLEY_DISCORD_GATEWAY_URL=discord.gateway_url,
        )  # fmt: skip
        code, _, err = await parley_async(env, "run", "discord")
    finally:
        await discord.stop()
    assert code == 2 and "Traceback" not in err, err
    assert "Parley cannot start: Discord refused DISCORD_BOT_TOKEN" in err
    assert len(discord.calls_to("GET", r"/users/@me")) == 1  # refused: never retried


def test_usage_top_labels_its_total_as_the_shown_rows(tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        env = environment(tmp_path, OPENAI_BASE_URL=fake.base_url)
        for user in ("ann", "bob", "cy"):
            parley(env, "chat", "--user", user, stdin="hello\n")
    result = parley(env, "usage", "--top", "2")
    assert "TOTAL (top 2 shown)" in result.stdout, result.stdout + result.stderr
    assert "TOTAL (" not in parley(env, "usage").stdout


async def test_a_refused_message_content_intent_is_one_line_and_an_exit(tmp_path: Path) -> None:
    discord = FakeDiscord()
    discord.refuse_intents = True
    await discord.start()
    try:
        env = environment(
            tmp_path, DISCORD_BOT_TOKEN="d", PARLEY_DISCORD_API_URL=discord.api_url,
            PARLEY_DISCORD_GATEWAY_URL=discord.gateway_url,
        )  # fmt: skip
        code, _, err = await parley_async(env, "run", "discord")
    finally:
        await discord.stop()
    assert code == 2 and "Traceback" not in err, err
    assert "Parley cannot start: Discord refused the Message Content intent" in err


def test_check_names_an_invalid_config(tmp_path: Path) -> None:
    result = parley(environment(tmp_path, PORT="70000"), "check", "--format", "json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [config] = json.loads(result.stdout)
    assert config["name"] == "config" and config["ok"] is False
    assert "PORT" in config["detail"]
