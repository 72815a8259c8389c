"""Settings: defaults < config file < environment < CLI flags.

Every setting has one name (section.key) used in the TOML file and in error
messages. Secrets (API keys, bot tokens) come only from the environment: they are
read where they are used, never stored in Settings, so a printed or logged Settings
can never leak one.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import find_dotenv, load_dotenv

from bot.regex_check import nested_repetition

DEFAULT_CONFIG_PATH = Path("config/parley.toml")
SECRET_NAMES = (
    "OPENAI_API_KEY",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "DISCORD_BOT_TOKEN",
    "PARLEY_ADMIN_TOKEN",
    "PARLEY_WEB_TOKEN",
    "PARLEY_METRICS_TOKEN",
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says how to fix it."""


@dataclass(frozen=True)
class FetchSettings:
    """[tools.fetch]: which hosts fetch_url may read, and how much."""

    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 2_000_000
    max_chars: int = 20_000
    timeout_seconds: float = 10.0


# The platforms with a [streaming] pace of their own (Settings.stream_seconds_<name>).
STREAMED_PLATFORMS = ("slack", "discord", "web", "console")


@dataclass(frozen=True)
class Settings:
    model: str = "gpt-4o-mini"
    context_tokens: int = 8000
    reply_tokens: int = 1000
    history_messages: int = 100
    # Long conversations (bot/prompting.py, bot/summaries.py): a trim drops history to
    # this fraction of the budget; a rolling summary keeps what was dropped.
    prompt_cache_key: bool = True
    trim_to: float = 0.6
    summary_enabled: bool = True
    summary_model: str = ""  # "": the channel's model
    summary_tokens: int = 600
    response_cache_seconds: float = 0.0  # 0: no response cache
    # Each wait for bytes from the model endpoint (connecting, each read of a stream).
    timeout_seconds: float = 60.0
    # Each attempt's wait for the first token, and the whole call's time, retries and
    # the waits between them included (bot/llm_deadline.py).
    first_token_seconds: float = 60.0
    deadline_seconds: float = 120.0
    max_attempts: int = 4
    retry_max_wait_seconds: float = 30.0
    max_concurrent_calls: int = 8
    system_prompt: str = "You are Parley, a helpful assistant in a team chat. Answer concisely."
    db_path: str = "data/parley.db"
    # How long a replica's claim on a message outlives the replica: after a crash the
    # conversation waits at most this long before the next message is answered.
    lease_seconds: float = 15.0
    # A message claimed but never answered (a crash) is answered late up to this age;
    # older ones get a note that the answer was lost.
    recovery_max_age: float = 600.0
    # On SIGTERM or SIGINT, answers in progress get this long to finish.
    shutdown_grace_seconds: float = 20.0
    prices_path: str = "config/prices.toml"
    max_input_chars: int = 8000
    requests_per_minute: int = 20
    tokens_per_day: int = 200_000
    cost_per_day_usd: float = 0.0
    admins_exempt: bool = True
    admins: tuple[str, ...] = ()
    # "platform:workspace" ids whose own admins (Discord Manage Server, Slack workspace
    # admins, the web dashboard's token holder) are Parley admins. Anyone can create a
    # Discord server and invite a public bot, so no workspace is trusted by default.
    # console:local: whoever runs the terminal chat runs Parley (unless --user is given).
    platform_admin_workspaces: tuple[str, ...] = ("web:local", "console:local")
    # None: every registered tool (built-ins, plugins and MCP servers' tools).
    tools: tuple[str, ...] | None = None
    # "platform:workspace:channel" -> the tools that channel gets instead of `tools`
    tool_channels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tool_modules: tuple[str, ...] = ()
    tool_timeout_seconds: float = 10.0
    max_tool_rounds: int = 5
    mcp_servers: tuple[Mapping[str, Any], ...] = field(default=())
    # Safety and governance (bot/safety.py): every part off, or harmless, by default.
    moderation_enabled: bool = False
    moderation_provider: str = "openai"  # "openai", "patterns" or "both"
    moderation_model: str = "omni-moderation-latest"
    moderation_patterns: tuple[str, ...] = ()
    moderation_check_answers: bool = False
    moderation_on_failure: str = "closed"  # the endpoint failed: "open" lets it pass
    moderation_thresholds: Mapping[str, float] = field(default_factory=dict)
    redaction_enabled: bool = False
    redaction_patterns: tuple[str, ...] = ()
    redaction_store_original: bool = True
    redaction_mask_secrets: bool = True
    budget_daily_usd: float = 0.0
    budget_monthly_usd: float = 0.0
    budget_warn_at: float = 0.8
    budget_fallback_model: str = ""
    # "platform:workspace" -> {"daily_usd": x, "monthly_usd": y}
    budget_workspaces: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    audit_retain_days: int = 0  # 0: audit rows are kept for ever
    slack_allow_bots: bool = False
    discord_sharded: bool = False
    # Several processes splitting the gateway: the shards in all, and this one's.
    discord_shard_count: int = 0
    discord_shard_ids: tuple[int, ...] = ()
    web_host: str = "127.0.0.1"
    port: int = 3000
    # No OPENAI_API_KEY nor OPENAI_BASE_URL: look for a local server (bot/discovery.py).
    discover_local_models: bool = True
    # Discord: how long to keep retrying a login while its API cannot be reached.
    discord_login_retry_seconds: float = 60.0
    # The HTTP server's defences against slow and numerous clients (bot/http_guard.py).
    header_timeout_seconds: float = 20.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 1000
    # The web chat's own limits (adapters/web_limits.py), on top of the per-user ones: a
    # new session cookie is a new user, so addresses and the total are limited too.
    web_rpm_per_address: int = 60
    web_rpm_total: int = 600
    # Proxies whose X-Forwarded-For names the client (addresses or networks).
    trusted_proxies: tuple[str, ...] = ()
    # Access lists (bot/access.py): ids as python -m bot access names them. Empty allow
    # lists let everyone in; admins pass every list.
    access_allow_users: tuple[str, ...] = ()
    access_block_users: tuple[str, ...] = ()
    access_allow_channels: tuple[str, ...] = ()
    access_block_channels: tuple[str, ...] = ()
    access_allow_roles: tuple[str, ...] = ()
    access_block_roles: tuple[str, ...] = ()
    access_dms: bool = True
    access_refusal: str = "once"  # or "silent"
    # Replied-to Discord messages carried into the prompt, counting up the chain.
    discord_reply_chain_depth: int = 5
    summarize_max_messages: int = 200
    # How often the config file is checked for changes (bot/live_config.py); 0: never.
    reload_poll_seconds: float = 2.0
    # How often a streamed answer's text is read from the model and shown, per platform
    # (bot/llm.py: each wake-up of the process costs far more than a chunk's own work);
    # one field for each of STREAMED_PLATFORMS.
    stream_seconds_slack: float = 1.5
    stream_seconds_discord: float = 1.5
    stream_seconds_web: float = 0.5
    stream_seconds_console: float = 0.5
    # "auto" (by the model's name, bot/vision.py), "true" or "false".
    vision: str = "auto"
    # Files sent with a message (bot/attachments.py).
    attachment_max_files: int = 10
    attachment_max_bytes: int = 10_000_000
    attachment_max_text_chars: int = 20_000
    attachment_timeout_seconds: float = 20.0
    image_max_side: int = 1024
    image_detail: str = "auto"
    # The fetch_url tool (bot/tools/fetch.py): off while no host is allowed.
    fetch: FetchSettings = field(default_factory=FetchSettings)
    config_path: str = ""
    # The command line's overrides, applied again when the config file is re-read.
    cli_overrides: tuple[tuple[str, Any], ...] = ()

    def stream_seconds(self, platform: str) -> float | None:
        """How often a streamed answer is read and shown on `platform` (None: unknown)."""
        seconds = getattr(self, f"stream_seconds_{platform}", None)
        return seconds if isinstance(seconds, float) else None


def _number(kind: type[int] | type[float], above_zero: bool) -> Callable[[Any], Any]:
    """A parser for whole or decimal numbers > 0 (or >= 0)."""

    def parse(value: Any) -> int | float:
        # TOML's true and 1.5 must not pass as the whole numbers 1 and 1.
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError
        number = kind(value)
        # TOML's nan passes every comparison below; it would fail at first use.
        if math.isnan(number) or number < 0 or (above_zero and number == 0):
            raise ValueError
        return number

    return parse


_positive_int = _number(int, above_zero=True)
_non_negative_int = _number(int, above_zero=False)
_positive_float = _number(float, above_zero=True)
_non_negative_float = _number(float, above_zero=False)


def _port(value: Any) -> int:
    number = _positive_int(value)
    if number > 65535:
        raise ValueError
    return int(number)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError


def _int_list(value: Any) -> tuple[int, ...]:
    parts = _string_list(value) if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or not parts:
        raise ValueError
    numbers = tuple(_non_negative_int(int(part) if isinstance(part, str) else part)
                    for part in parts)  # fmt: skip
    if len(set(numbers)) != len(numbers):
        raise ValueError
    return numbers


def _ids(parts: int, example: str) -> Callable[[Any], tuple[str, ...]]:
    """A list of ids made of `parts` non-empty pieces joined by ":"."""

    def parse(value: Any) -> tuple[str, ...]:
        ids = _string_list(value)
        for item in ids:
            pieces = item.split(":")
            if len(pieces) != parts or not all(pieces):
                raise ValueError(f"{item!r} is not like {example}")
        return ids

    return parse


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError
        return str(value)

    return parse


def _networks(value: Any) -> tuple[str, ...]:
    networks = _string_list(value)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names a bad one
    return networks


def _channel_tools(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError
    return {str(channel): _string_list(tools) for channel, tools in value.items()}


def _vision(value: Any) -> str:
    """[model] vision: "auto", or true / false (TOML booleans, or the words)."""
    text = str(value).lower() if isinstance(value, bool) else str(value).strip().lower()
    if text not in ("auto", "true", "false"):
        raise ValueError
    return text


def _fetch_table(value: Any) -> FetchSettings:
    if not isinstance(value, dict) or not set(value) <= {f.name for f in fields(FetchSettings)}:
        raise ValueError
    hosts = tuple(h.strip().lower() for h in _string_list(value.get("allow_hosts", [])))
    return FetchSettings(
        allow_hosts=hosts,
        max_bytes=_positive_int(value.get("max_bytes", FetchSettings.max_bytes)),
        max_chars=_positive_int(value.get("max_chars", FetchSettings.max_chars)),
        timeout_seconds=_positive_float(
            value.get("timeout_seconds", FetchSettings.timeout_seconds)
        ),
    )


def _table_list(value: Any) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return tuple(value)
    raise ValueError


@dataclass(frozen=True)
class _Option:
    attribute: str
    parse: Callable[[Any], Any]
    expected: str
    env: str = ""


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError
        return str(value)

    return parse


class _Unsafe(ValueError):
    """A value that parses but must not be used; the text says why."""


def _regexes(value: Any) -> tuple[str, ...]:
    patterns = _string_list(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            raise ValueError from None
        if nested_repetition(pattern):
            raise _Unsafe(
                f"{pattern!r} repeats a repetition, which can take exponential time on a "
                "near miss; write it possessively, e.g. (a++)+ or (?>a+)+, or bound it"
            )
    return patterns


def _fraction(value: Any) -> float:
    number = _positive_float(value)
    if number > 1:
        raise ValueError
    return float(number)


def _thresholds(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError
    return {str(category): _fraction(score) for category, score in value.items()}


def _workspace_budgets(value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise ValueError
    budgets: dict[str, dict[str, float]] = {}
    for workspace, table in value.items():
        platform, _, team = str(workspace).partition(":")
        if not platform or not team or not isinstance(table, dict):
            raise ValueError
        if set(table) - {"daily_usd", "monthly_usd"}:
            raise ValueError
        budgets[str(workspace)] = {k: float(_non_negative_float(v)) for k, v in table.items()}
    return budgets


SAFETY_OPTIONS: dict[str, _Option] = {
    "moderation.enabled": _Option("moderation_enabled", _boolean, "true or false"),
    "moderation.provider": _Option(
        "moderation_provider", _choice("openai", "patterns", "both"),
        '"openai", "patterns" or "both"',
    ),
    "moderation.model": _Option("moderation_model", _text, "a moderation model name"),
    "moderation.patterns": _Option(
        "moderation_patterns", _regexes, "a list of words or regular expressions"
    ),
    "moderation.check_answers": _Option("moderation_check_answers", _boolean, "true or false"),
    "moderation.on_failure": _Option(
        "moderation_on_failure", _choice("open", "closed"), '"open" or "closed"'
    ),
    "moderation.thresholds": _Option(
        "moderation_thresholds", _thresholds, 'a table of category = score, e.g. "hate" = 0.5'
    ),
    "redaction.enabled": _Option("redaction_enabled", _boolean, "true or false"),
    "redaction.patterns": _Option("redaction_patterns", _regexes, "a list of regular expressions"),
    "redaction.store_original": _Option("redaction_store_original", _boolean, "true or false"),
    "redaction.mask_secrets": _Option("redaction_mask_secrets", _boolean, "true or false"),
    "budget.daily_usd": _Option("budget_daily_usd", _non_negative_float, "dollars >= 0"),
    "budget.monthly_usd": _Option("budget_monthly_usd", _non_negative_float, "dollars >= 0"),
    "budget.warn_at": _Option("budget_warn_at", _fraction, "a fraction such as 0.8"),
    "budget.fallback_model": _Option("budget_fallback_model", str, "a model name"),
    "budget.workspaces": _Option(
        "budget_workspaces", _workspace_budgets,
        'tables [budget.workspaces."slack:T0123"] with daily_usd and/or monthly_usd',
    ),
    "audit.retain_days": _Option("audit_retain_days", _non_negative_int, "whole days >= 0"),
}  # fmt: skip

# section.key in the TOML file -> attribute, parser, what a good value looks like, env
OPTIONS: dict[str, _Option] = {
    "model.name": _Option("model", _text, "a model name", "PARLEY_MODEL"),
    "model.context_tokens": _Option("context_tokens", _positive_int, "a whole number > 0"),
    "model.reply_tokens": _Option("reply_tokens", _positive_int, "a whole number > 0"),
    "model.history_messages": _Option("history_messages", _positive_int, "a whole number > 0"),
    "model.timeout_seconds": _Option("timeout_seconds", _positive_float, "seconds > 0"),
    "model.first_token_seconds": _Option("first_token_seconds", _positive_float, "seconds > 0"),
    "model.deadline_seconds": _Option("deadline_seconds", _positive_float, "seconds > 0"),
    "model.max_attempts": _Option("max_attempts", _positive_int, "a whole number > 0"),
    "model.retry_max_wait_seconds": _Option(
        "retry_max_wait_seconds", _positive_float, "seconds > 0"
    ),
    "model.max_concurrent_calls": _Option(
        "max_concurrent_calls", _positive_int, "a whole number > 0"
    ),
    "model.system_prompt": _Option("system_prompt", _text, "some text"),
    "model.vision": _Option("vision", _vision, '"auto", true or false'),
    "attachments.max_files": _Option("attachment_max_files", _positive_int, "a whole number > 0"),
    "attachments.max_file_bytes": _Option(
        "attachment_max_bytes", _positive_int, "a whole number of bytes > 0"
    ),
    "attachments.max_text_chars": _Option(
        "attachment_max_text_chars", _positive_int, "a whole number > 0"
    ),
    "attachments.download_timeout_seconds": _Option(
        "attachment_timeout_seconds", _positive_float, "seconds > 0"
    ),
    "attachments.image_max_side": _Option("image_max_side", _positive_int, "pixels > 0"),
    "attachments.image_detail": _Option(
        "image_detail", _choice("auto", "low", "high"), '"auto", "low" or "high"'
    ),
    "tools.fetch": _Option(
        "fetch",
        _fetch_table,
        "a [tools.fetch] table: allow_hosts, max_bytes, max_chars, timeout_seconds",
    ),
    "model.prompt_cache_key": _Option("prompt_cache_key", _boolean, "true or false"),
    "context.trim_to": _Option("trim_to", _fraction, "a fraction > 0 and <= 1, e.g. 0.6"),
    "summary.enabled": _Option("summary_enabled", _boolean, "true or false"),
    "summary.model": _Option("summary_model", _text, "a model name"),
    "summary.max_tokens": _Option("summary_tokens", _positive_int, "a whole number > 0"),
    "response_cache.ttl_seconds": _Option(
        "response_cache_seconds", _non_negative_float, "seconds >= 0 (0: off)"
    ),
    "store.path": _Option("db_path", _text, "a file path or a postgresql:// URL", "PARLEY_DB"),
    "store.lease_seconds": _Option("lease_seconds", _positive_float, "seconds > 0"),
    "recovery.max_age": _Option("recovery_max_age", _positive_float, "seconds > 0"),
    "shutdown.grace_seconds": _Option(
        "shutdown_grace_seconds", _non_negative_float, "seconds >= 0"
    ),
    "usage.prices_path": _Option("prices_path", _text, "a file path"),
    "chat.max_input_chars": _Option("max_input_chars", _positive_int, "a whole number > 0"),
    "limits.requests_per_minute": _Option(
        "requests_per_minute", _non_negative_int, "a whole number >= 0", "PARLEY_RATE_PER_MINUTE"
    ),
    "limits.tokens_per_day": _Option(
        "tokens_per_day", _non_negative_int, "a whole number >= 0", "PARLEY_TOKENS_PER_DAY"
    ),
    "limits.cost_per_day_usd": _Option("cost_per_day_usd", _non_negative_float, "dollars >= 0"),
    "limits.admins_exempt": _Option("admins_exempt", _boolean, "true or false"),
    "admins.users": _Option(
        "admins", _string_list, "platform:user ids, e.g. slack:U123", "PARLEY_ADMINS"
    ),
    "admins.platform_admin_workspaces": _Option(
        "platform_admin_workspaces", _string_list, 'platform:workspace ids, e.g. "discord:1234"'
    ),
    "tools.enabled": _Option("tools", _string_list, "a list of tool names"),
    "tools.channels": _Option(
        "tool_channels", _channel_tools, 'a table of "platform:workspace:channel" = [tools]'
    ),
    "tools.modules": _Option("tool_modules", _string_list, "a list of module names"),
    "tools.timeout_seconds": _Option("tool_timeout_seconds", _positive_float, "seconds > 0"),
    "tools.max_rounds": _Option("max_tool_rounds", _positive_int, "a whole number > 0"),
    "tools.mcp_servers": _Option("mcp_servers", _table_list, "a list of [[tools.mcp_servers]]"),
    **SAFETY_OPTIONS,
    "slack.allow_bots": _Option("slack_allow_bots", _boolean, "true or false"),
    "discord.sharded": _Option("discord_sharded", _boolean, "true or false"),
    "discord.shard_count": _Option(
        "discord_shard_count", _positive_int, "a whole number > 0", "PARLEY_DISCORD_SHARD_COUNT"
    ),
    "discord.shard_ids": _Option(
        "discord_shard_ids",
        _int_list,
        "a list of distinct shard numbers, e.g. [0, 1]",
        "PARLEY_DISCORD_SHARD_IDS",
    ),
    "access.allow_users": _Option("access_allow_users", _ids(2, "slack:U123"), "platform:user ids"),
    "access.block_users": _Option("access_block_users", _ids(2, "slack:U123"), "platform:user ids"),
    "access.allow_channels": _Option(
        "access_allow_channels", _ids(3, "slack:T1:C2"), "platform:workspace:channel ids"
    ),
    "access.block_channels": _Option(
        "access_block_channels", _ids(3, "slack:T1:C2"), "platform:workspace:channel ids"
    ),
    "access.allow_roles": _Option(
        "access_allow_roles", _ids(3, "discord:1:2"), "discord:guild:role ids"
    ),
    "access.block_roles": _Option(
        "access_block_roles", _ids(3, "discord:1:2"), "discord:guild:role ids"
    ),
    "access.dms": _Option("access_dms", _boolean, "true or false"),
    "access.refusal": _Option("access_refusal", _one_of("once", "silent"), '"once" or "silent"'),
    "discord.reply_chain_depth": _Option(
        "discord_reply_chain_depth", _non_negative_int, "a whole number >= 0"
    ),
    "summarize.max_messages": _Option(
        "summarize_max_messages", _positive_int, "a whole number > 0"
    ),
    "reload.poll_seconds": _Option("reload_poll_seconds", _non_negative_float, "seconds >= 0"),
    **{
        f"streaming.{platform}_seconds": _Option(
            f"stream_seconds_{platform}", _non_negative_float, "seconds >= 0"
        )
        for platform in STREAMED_PLATFORMS
    },
    "web.host": _Option("web_host", _text, "an address such as 127.0.0.1"),
    "web.port": _Option("port", _port, "a port number from 1 to 65535", "PORT"),
    "model.discover_local": _Option("discover_local_models", _boolean, "true or false"),
    "discord.login_retry_seconds": _Option(
        "discord_login_retry_seconds",
        _non_negative_float,
        "seconds >= 0",
        "PARLEY_DISCORD_LOGIN_RETRY_SECONDS",
    ),
    "web.header_timeout_seconds": _Option("header_timeout_seconds", _positive_float, "seconds > 0"),
    "web.body_timeout_seconds": _Option("body_timeout_seconds", _positive_float, "seconds > 0"),
    "web.max_connections": _Option("max_connections", _positive_int, "a whole number > 0"),
    "web.chat_requests_per_minute_per_address": _Option(
        "web_rpm_per_address", _non_negative_int, "a whole number >= 0"
    ),
    "web.chat_requests_per_minute": _Option(
        "web_rpm_total", _non_negative_int, "a whole number >= 0"
    ),
    "web.trusted_proxies": _Option(
        "trusted_proxies", _networks, 'addresses or networks, e.g. ["10.0.0.0/8"]'
    ),
}


def _flatten(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{section}' must be a [section], not a value")
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
    return flat


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"PARLEY_CONFIG: cannot read {path} ({error.strerror})") from None
    flat = _flatten(document, str(path))
    for name in flat:
        if name not in OPTIONS:
            secretish = any(word in name for word in ("key", "token", "secret"))
            hint = (
                "secrets belong in the environment, never in the config file"
                if secretish
                else "see config/parley.toml for the known settings"
            )
            raise ConfigError(f"{path}: unknown setting '{name}' ({hint})")
    return flat


def _parse(name: str, value: Any, source: str) -> Any:
    option = OPTIONS[name]
    try:
        return option.parse(value)
    except _Unsafe as error:
        raise ConfigError(f"{name}: {error} (from {source})") from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be {option.expected}, got {value!r} (from {source})"
        ) from None


def _validate(settings: Settings) -> Settings:
    if settings.reply_tokens >= settings.context_tokens:
        raise ConfigError(
            "model.reply_tokens must be smaller than model.context_tokens "
            f"({settings.reply_tokens} >= {settings.context_tokens}): the answer needs room"
        )
    room = settings.context_tokens - settings.reply_tokens
    if settings.summary_enabled and settings.summary_tokens >= settings.trim_to * room:
        raise ConfigError(
            f"summary.max_tokens ({settings.summary_tokens}) must be smaller than context.trim_to"
            f" ({settings.trim_to:g}) of the room for the prompt ({room} tokens): after a trim"
            " the summary and the recent messages share it"
        )
    shards = settings.discord_shard_ids
    if shards and not settings.discord_shard_count:
        raise ConfigError(
            "discord.shard_ids needs discord.shard_count (PARLEY_DISCORD_SHARD_COUNT): "
            "how many shards all the processes run together"
        )
    if shards and max(shards) >= settings.discord_shard_count:
        raise ConfigError(
            f"discord.shard_ids {list(shards)} must be below discord.shard_count "
            f"({settings.discord_shard_count}): shards are numbered from 0"
        )
    for admin in settings.admins:
        platform, _, user = admin.partition(":")
        if not platform or not user:
            raise ConfigError(
                f"admins.users / PARLEY_ADMINS: {admin!r} must look like platform:user, "
                "e.g. slack:U123,discord:456,console:alice"
            )
    return settings


def load_environment_file() -> None:
    """Read ./.env into the environment (never overriding what is already set)."""
    # usecwd: look in the folder Parley is run from, not next to the installed package.
    load_dotenv(find_dotenv(usecwd=True), override=False)


def load_settings(
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the config file, the environment and CLI overrides.

    `overrides` maps option names (section.key) to values from the command line.
    Reads a .env file into the process environment first, if one is present.
    """
    if environ is None:
        load_environment_file()
        environ = os.environ
    chosen = config_path or environ.get("PARLEY_CONFIG") or ""
    path = Path(chosen) if chosen else DEFAULT_CONFIG_PATH
    if chosen and not path.is_file():
        raise ConfigError(f"PARLEY_CONFIG: config file {path} does not exist")
    values: dict[str, Any] = {}
    file_values = _read_file(path) if path.is_file() else {}
    for name, value in file_values.items():
        values[OPTIONS[name].attribute] = _parse(name, value, str(path))
    for name, option in OPTIONS.items():
        if option.env and environ.get(option.env, "").strip():
            values[option.attribute] = _parse(name, environ[option.env], option.env)
    for name, value in (overrides or {}).items():
        values[OPTIONS[name].attribute] = _parse(name, value, "the command line")
    known = {f.name for f in fields(Settings)}
    assert set(values) <= known
    cli = tuple((overrides or {}).items())
    return _validate(replace(Settings(), config_path=str(path), cli_overrides=cli, **values))


def secret(name: str) -> str:
    """A secret from the environment, or "" when unset. Never log the result."""
    assert name in SECRET_NAMES, name
    return os.environ.get(name, "").strip()
