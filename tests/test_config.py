"""Settings: precedence, and bad values stopping start-up with a message that helps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import STREAMED_PLATFORMS, ConfigError, load_settings


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, "")), environ={})
    assert settings.model == "gpt-4o-mini"
    assert settings.db_path == "data/parley.db"


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\nname = "from-file"\n[limits]\nrequests_per_minute = 5\n')
    assert load_settings(path, environ={}).model == "from-file"
    environ = {"PARLEY_MODEL": "from-env", "PARLEY_RATE_PER_MINUTE": "7"}
    settings = load_settings(path, environ=environ)
    assert (settings.model, settings.requests_per_minute) == ("from-env", 7)
    flagged = load_settings(path, environ=environ, overrides={"model.name": "from-flag"})
    assert flagged.model == "from-flag"


def test_admins_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, ""), environ={"PARLEY_ADMINS": "slack:U1, discord:2,console:al"}
    )
    assert settings.admins == ("slack:U1", "discord:2", "console:al")


@pytest.mark.parametrize(
    ("text", "environ", "names"),
    [
        ("[limits]\nrequests_per_minute = -1\n", {}, "limits.requests_per_minute"),
        ("", {"PARLEY_RATE_PER_MINUTE": "lots"}, "PARLEY_RATE_PER_MINUTE"),
        ("", {"PARLEY_TOKENS_PER_DAY": "1.5"}, "limits.tokens_per_day"),
        ("[model]\ncontext_tokens = 100\nreply_tokens = 200\n", {}, "model.reply_tokens"),
        ("[model]\nnmae = 'typo'\n", {}, "model.nmae"),
        ("[slack]\nbot_token = 'xoxb-secret'\n", {}, "secrets belong in the environment"),
        ("[model\n", {}, "not valid TOML"),
        ("", {"PARLEY_ADMINS": "alice"}, "platform:user"),
        ("", {"PORT": "http"}, "web.port"),
        ("[web]\ntrusted_proxies = ['10.0.0.0/8', 'proxy']\n", {}, "web.trusted_proxies"),
        ("[context]\ntrim_to = nan\n", {}, "context.trim_to"),  # TOML's nan
        ("[model]\ndeadline_seconds = nan\n", {}, "model.deadline_seconds"),
        ("[summary]\nmax_tokens = 5000\n", {}, "summary.max_tokens"),  # room 7,000 x 0.6
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, text: str, environ: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), environ=environ)
    assert names in str(raised.value)


def test_missing_config_file_named_by_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PARLEY_CONFIG"):
        load_settings(environ={"PARLEY_CONFIG": str(tmp_path / "nope.toml")})


def test_shipped_config_file_is_valid_and_matches_defaults() -> None:
    from bot.config import Settings

    settings = load_settings("config/parley.toml", environ={})
    defaults = Settings()
    assert settings.model == defaults.model
    assert settings.context_tokens == defaults.context_tokens
    assert settings.requests_per_minute == defaults.requests_per_minute
    for platform in STREAMED_PLATFORMS:
        assert settings.stream_seconds(platform) == defaults.stream_seconds(platform)


def test_stream_pace_per_platform(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[streaming]\nweb_seconds = 0\n"), environ={})
    assert settings.stream_seconds("web") == 0.0  # every chunk as it comes
    assert settings.stream_seconds("slack") == 1.5
    assert settings.stream_seconds("elsewhere") is None  # the model client's own
    with pytest.raises(ConfigError, match=r"streaming\.slack_seconds"):
        load_settings(write(tmp_path, "[streaming]\nslack_seconds = -1\n"), environ={})


def test_bad_config_stops_the_cli_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "usage"],
        env={"PARLEY_RATE_PER_MINUTE": "many", "PATH": "", "PARLEY_DB": str(tmp_path / "d.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PARLEY_RATE_PER_MINUTE" in result.stderr
    assert "Traceback" not in result.stderr


def test_per_channel_tools_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[tools.channels]\n"slack:T1:C1" = ["calculate"]\n"discord:1:2" = []\n')
    settings = load_settings(path, environ={})
    assert settings.tool_channels == {"slack:T1:C1": ("calculate",), "discord:1:2": ()}
