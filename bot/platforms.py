"""Which adapters can run, given the environment, and what is missing for the rest."""

from __future__ import annotations

import os
from collections.abc import Sequence

from bot.config import ConfigError, secret
from bot.discovery import WAYS_IN_ONE_LINE
from bot.startup import StartupError, model_setting_problem

ADAPTERS = ("slack", "discord", "web")
# What to set for each platform, said the same way wherever Parley says it.
MISSING = {
    "slack": "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (HTTP Events API), "
    "or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode)",
    "discord": "set DISCORD_BOT_TOKEN (and DISCORD_GUILD_IDS to sync commands at once)",
}


def slack_ready() -> bool:
    return bool(secret("SLACK_BOT_TOKEN")) and bool(
        secret("SLACK_APP_TOKEN") or secret("SLACK_SIGNING_SECRET")
    )


def discord_ready() -> bool:
    return bool(secret("DISCORD_BOT_TOKEN"))


def slack_half_set() -> str:
    """What is missing when Slack is set up only in part, else ""."""
    bot_token = bool(secret("SLACK_BOT_TOKEN"))
    other = bool(secret("SLACK_APP_TOKEN") or secret("SLACK_SIGNING_SECRET"))
    if bot_token and not other:
        return (
            "SLACK_BOT_TOKEN is set but neither SLACK_SIGNING_SECRET (HTTP Events API) nor "
            "SLACK_APP_TOKEN (Socket Mode) is: set one, or unset SLACK_BOT_TOKEN"
        )
    if other and not bot_token:
        return "SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: set it"
    return ""


def availability(blocked: str = "", web_blocked: str = "") -> list[str]:
    """One line per adapter: ready, or what to set. No network calls (see `check`).
    `blocked`: a fault that stops both chats (the database); `web_blocked`: the port."""
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    if problem := model_setting_problem():
        model, chats = problem, "will not start until the model settings are fixed"
    elif base_url or secret("OPENAI_API_KEY"):
        model = base_url or "OpenAI"
        chats = "ready"
    else:
        model = WAYS_IN_ONE_LINE
        chats = "starts, but answers only once a model endpoint is set"
    web_blocked = blocked or web_blocked
    return [
        f"Model endpoint: {model}",
        f"Console chat: {f'cannot start: {blocked}' if blocked else chats} (python -m bot chat)",
        f"Web chat: {f'cannot start: {web_blocked}' if web_blocked else chats} "
        "(python -m bot run web)",
        "Slack: " + ("ready (python -m bot run slack)" if slack_ready() else MISSING["slack"]),
        "Discord: "
        + ("ready (python -m bot run discord)" if discord_ready() else MISSING["discord"]),
    ]


def choose_adapters(names: Sequence[str]) -> list[str]:
    """The adapters to run: those named, else every one whose token is set, else web."""
    chosen = list(dict.fromkeys(names))
    unknown = [name for name in chosen if name not in ADAPTERS]
    if unknown:
        raise ConfigError(f"unknown adapter {', '.join(unknown)}: use slack, discord or web")
    if "slack" in chosen and not slack_ready():
        raise ConfigError(f"Slack: {slack_half_set() or MISSING['slack']}")
    if "discord" in chosen and not discord_ready():
        raise ConfigError(f"Discord: {MISSING['discord']}")
    if chosen:
        return chosen
    half = slack_half_set()
    if half:  # never silently start only the web chat
        raise StartupError(f"Slack: {half}")
    ready = [name for name, ok in (("slack", slack_ready()), ("discord", discord_ready())) if ok]
    return ready or ["web"]
