"""More start-up faults a new user meets, each one line naming the setting, exit 2, no
traceback; and model settings that cannot work are said at start, not on every message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI, Status
from tests.test_first_run import ROOT, assert_one_line_fault, environment, items, parley


def test_chat_with_stdin_closed_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat"], env=environment(tmp_path, OPENAI_API_KEY="k"),
        cwd=ROOT, stdin=None, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.close(0),
    )  # fmt: skip
    assert_one_line_fault(result, "standard input", "closed")


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ({"OPENAI_API_KEY": "sk-abc\ndef"}, ("OPENAI_API_KEY", "line break", "copy the key")),
        ({"OPENAI_API_KEY": "sk-abc def"}, ("OPENAI_API_KEY", "space", "copy the key")),
        ({"OPENAI_API_KEY": "“sk-abc”"}, ("OPENAI_API_KEY", "not plain ASCII")),
        ({"OPENAI_BASE_URL": "localhost:11434"}, ("OPENAI_BASE_URL", "http://localhost")),
    ],
)
def test_model_settings_that_cannot_work_are_one_line_at_start(
    tmp_path: Path, variables: dict[str, str], words: tuple[str, ...]
) -> None:
    env = environment(tmp_path, **variables)
    assert_one_line_fault(parley(env, "chat", stdin="hi\n"), *words)
    if "OPENAI_BASE_URL" in variables:  # run meets them as chat does: once is enough
        assert_one_line_fault(parley(env, "run", "web"), *words)
    checked = parley(env, "check", "--format", "json")
    assert checked.returncode == 1
    assert items(checked.stdout)["model settings"]["ok"] is False
    assert "ready" not in parley(env).stdout  # the status page


def test_a_base_url_without_v1_names_openai_base_url_not_the_model(tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        env = environment(tmp_path, OPENAI_BASE_URL=fake.base_url.removesuffix("/v1"))
        chatted = parley(env, "chat", stdin="hi\n")
        checked = parley(env, "check", "--format", "json")
    assert "OPENAI_BASE_URL (it usually ends in /v1)" in chatted.stdout
    assert "PARLEY_MODEL" not in chatted.stdout
    assert items(checked.stdout)["model endpoint"]["ok"] is False


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_bytes("[model]\nname = 'x'\n".encode("utf-16"))  # as Notepad may save it
    result = parley(environment(tmp_path), "run", "--config", str(config))
    assert_one_line_fault(result, str(config), "UTF-8")


def test_a_web_host_that_is_not_this_machine_says_how_to_fix_it(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[web]\nhost = "parley-no-such-host.invalid"\n')
    result = parley(environment(tmp_path), "run", "web", "--config", str(config))
    assert_one_line_fault(result, "web.host", "set web.host", "127.0.0.1")


def test_run_slack_with_only_the_app_token_names_the_missing_bot_token(tmp_path: Path) -> None:
    result = parley(environment(tmp_path, SLACK_APP_TOKEN="xapp-1"), "run", "slack")
    assert_one_line_fault(result, "Slack", "SLACK_BOT_TOKEN is not: set it")


def test_status_does_not_call_a_chat_ready_that_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = parley(environment(tmp_path, OPENAI_API_KEY="k", PORT=port)).stdout
    assert "Console chat: ready" in busy
    assert f"Web chat: cannot start: PORT {port} is already in use" in busy
    folder = parley(environment(tmp_path, OPENAI_API_KEY="k", PARLEY_DB=str(tmp_path))).stdout
    assert "Console chat: cannot start: PARLEY_DB" in folder and ": ready" not in folder


def test_check_json_stays_parseable_with_a_broken_prices_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text("[gpt-4o-mini]\ninput =\n")
    config = tmp_path / "parley.toml"
    config.write_text(f'[usage]\nprices_path = "{prices}"\n')
    result = parley(environment(tmp_path), "check", "--format", "json", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert items(result.stdout)["config"]["ok"] is False
    assert str(prices) in str(items(result.stdout)["config"]["detail"])


@pytest.mark.parametrize("status", [404, 405])
def test_a_url_that_is_not_the_chat_api_names_openai_base_url(tmp_path: Path, status: int) -> None:
    with FakeOpenAI().run_in_thread() as fake:  # a web server that is no chat API
        fake.script(Status(status, {"detail": "Not Found" if status == 404 else "Not Allowed"}))
        chatted = parley(environment(tmp_path, OPENAI_BASE_URL=fake.base_url), "chat", stdin="hi\n")
    assert "check OPENAI_BASE_URL (it usually ends in /v1)" in chatted.stdout, chatted.stdout
    assert "/reset" not in chatted.stdout and "PARLEY_MODEL" not in chatted.stdout


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        ({"DISCORD_BOT_TOKEN": "abc\ndef"}, "DISCORD_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1 2", "SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN"),
    ],
)
def test_a_platform_token_pasted_badly_is_one_line(
    tmp_path: Path, variables: dict[str, str], name: str
) -> None:
    nowhere = {  # never the real platforms: a refused port, and no login retries
        "PARLEY_DISCORD_API_URL": "http://127.0.0.1:9/api/v10",
        "PARLEY_SLACK_API_URL": "http://127.0.0.1:9/api/",
        "PARLEY_DISCORD_LOGIN_RETRY_SECONDS": "0",
    }
    env = environment(tmp_path, OPENAI_API_KEY="k", **nowhere, **variables)
    assert_one_line_fault(parley(env, "run"), name, "copy it again")


def test_check_run_from_another_folder_does_not_call_a_missing_config_valid(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--format", "json"], env=environment(tmp_path),
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert items(result.stdout)["config"]["detail"] == "no config file here, defaults used"


def test_no_model_and_no_local_server_says_where_it_looked(tmp_path: Path) -> None:
    env = environment(tmp_path, PARLEY_LOCAL_MODEL_URLS="http://127.0.0.1:9/v1")
    result = parley(env, "chat", stdin="hi\n")
    assert "No local server answered at http://127.0.0.1:9/v1." in result.stderr


def test_output_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    with FakeOpenAI().run_in_thread() as fake:
        env = environment(tmp_path, OPENAI_BASE_URL=fake.base_url)
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "chat"], env=env, cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin and process.stdout and process.stderr
        process.stdin.write("hello\n" * 2000)
        process.stdin.close()
        assert process.stdout.readline() == "parley> echo: hello\n"
        process.stdout.close()  # as `| head -1` does
        errors = process.stderr.read()
        process.wait(timeout=60)
    assert "Parley stopped" not in errors and "Traceback" not in errors, errors
