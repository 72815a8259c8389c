"""One probe per part Parley needs, for `python -m bot check`: each returns Items.

Platform probes speak the platforms' HTTP APIs with aiohttp (bot/ imports no platform
SDK): Slack's auth.test (its X-OAuth-Scopes header lists the token's scopes), Discord's
/users/@me and /oauth2/applications/@me (its flags say which privileged intents are on).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.config import Settings, secret
from bot.discovery import WAYS_IN_ONE_LINE, Endpoint
from bot.llm import Completion, ModelClient, ModelError
from bot.money import usd
from bot.platforms import MISSING, slack_ready
from bot.usage import Prices

SLACK_API_URL = "https://slack.com/api/"
DISCORD_API_URL = "https://discord.com/api/v10"
MANIFEST = Path(__file__).resolve().parent.parent / "config" / "slack-manifest.yml"
# Application flags: the Message Content intent, for verified and unverified bots.
MESSAGE_CONTENT_INTENT = (1 << 18) | (1 << 19)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


MODEL_PARTS = ("model endpoint", "model key", "model exists")
_ENDPOINT_DOWN = ("refused", "no_host", "timeout", "unavailable", "rate_limited", "wrong_url")


async def probe_model(settings: Settings, endpoint: Endpoint, model: ModelClient) -> list[Item]:
    """One tiny request: the endpoint answers, the key is accepted, the model exists."""
    if not endpoint.configured:
        return [Item("model endpoint", False, WAYS_IN_ONE_LINE)]
    where = f"{endpoint.model} at {endpoint.shown}"
    try:
        completion = await _one_token(model, endpoint.model)
    except ModelError as error:
        return _model_failure(where, error)
    usage = completion.usage
    cost = Prices.load(settings.prices_path).cost(endpoint.model, usage) if usage else None
    spent = f"cost {usd(cost)}" if cost is not None else "cost unknown (no price listed)"
    return [
        Item("model endpoint", True, f"{where} answered"),
        Item("model key", True, "accepted"),
        Item("model exists", True, f"{endpoint.model} answered one token; {spent}"),
    ]


def _model_failure(where: str, error: ModelError) -> list[Item]:
    """Which of the three parts failed: the first that did is ✗, the rest not checked."""
    if error.kind in _ENDPOINT_DOWN:
        failed = "model endpoint"
    elif error.kind == "auth":
        failed = "model key"
    else:  # model missing, or the request itself refused: the model part
        failed = "model exists"
    index = MODEL_PARTS.index(failed)
    passed = [Item(MODEL_PARTS[0], True, where), Item(MODEL_PARTS[1], True, "accepted")]
    return [
        *passed[:index],
        Item(failed, False, f"{where}: {error.user_message}"),
        *(Item(name, False, "not checked") for name in MODEL_PARTS[index + 1 :]),
    ]


async def _one_token(model: ModelClient, name: str) -> Completion:
    messages = [{"role": "user", "content": "Say OK."}]
    async for item in model.stream(name, messages, max_tokens=1):
        if isinstance(item, Completion):
            return item
    raise ModelError("malformed", "the stream ended without a completion")


def manifest_scopes(path: Path = MANIFEST) -> set[str]:
    """The bot scopes config/slack-manifest.yml asks for (its `bot:` list)."""
    scopes: set[str] = set()
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        if re.match(r"^\s+bot:\s*$", line):
            inside = True
        elif inside and (item := re.match(r"^\s+-\s*([\w:.]+)", line)):
            scopes.add(item.group(1))
        elif inside and line.strip() and not line.strip().startswith("#"):
            inside = False
    return scopes


async def probe_slack() -> list[Item]:
    token = secret("SLACK_BOT_TOKEN")
    if not token:
        return [Item("slack", False, MISSING["slack"])]
    mode = (
        "Socket Mode (SLACK_APP_TOKEN)"
        if secret("SLACK_APP_TOKEN")
        else "HTTP Events API (SLACK_SIGNING_SECRET)"
    )
    items = [Item("slack mode", slack_ready(), mode if slack_ready() else MISSING["slack"])]
    base = os.environ.get("PARLEY_SLACK_API_URL", "").strip() or SLACK_API_URL
    url = base.rstrip("/") + "/auth.test"
    try:
        async with aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as session:
            async with session.post(url, headers={"Authorization": f"Bearer {token}"}) as reply:
                body = await reply.json(content_type=None)
                granted = {s.strip() for s in reply.headers.get("X-OAuth-Scopes", "").split(",")}
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return [*items, Item("slack token", False, f"{url} cannot be reached: {error}")]
    if not body.get("ok"):
        fix = "check SLACK_BOT_TOKEN (the Bot User OAuth Token, xoxb-...)"
        return [*items, Item("slack token", False, f"refused ({body.get('error')}): {fix}")]
    items.append(Item("slack token", True, f"bot {body.get('user')} in {body.get('team')}"))
    missing = sorted(manifest_scopes() - granted)
    scopes_detail = (
        f"missing {', '.join(missing)}: add them (config/slack-manifest.yml) and reinstall the app"
        if missing
        else "every scope the manifest asks for"
    )
    return [*items, Item("slack scopes", not missing, scopes_detail)]


async def probe_discord() -> list[Item]:
    token = secret("DISCORD_BOT_TOKEN")
    if not token:
        return [Item("discord", False, MISSING["discord"])]
    base = os.environ.get("PARLEY_DISCORD_API_URL", "").strip().rstrip("/") or DISCORD_API_URL
    headers = {"Authorization": f"Bot {token}"}
    try:
        async with aiohttp.ClientSession(timeout=PROBE_TIMEOUT, headers=headers) as session:
            async with session.get(f"{base}/users/@me") as reply:
                if reply.status == 401:
                    fix = "check DISCORD_BOT_TOKEN (Developer Portal > Bot > Reset Token)"
                    return [Item("discord token", False, f"refused: {fix}")]
                me = await reply.json(content_type=None)
            async with session.get(f"{base}/oauth2/applications/@me") as reply:
                application = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return [Item("discord token", False, f"{base} cannot be reached: {error}")]
    flags = int(application.get("flags") or 0)
    intent = bool(flags & MESSAGE_CONTENT_INTENT)
    return [
        Item("discord token", True, f"bot {me.get('username')}"),
        Item("discord application", True, f"id {application.get('id')}"),
        Item(
            "discord message content intent",
            intent,
            "on"
            if intent
            else "off: turn on Message Content Intent (Developer Portal > Bot > Privileged "
            "Gateway Intents)",
        ),
    ]
