"""Parley's Discord slash commands, translated into the neutral command text, and the
tree that syncs and runs them.

/ask and /chat talk to the model; every other command becomes the line the console
would take ("/usage 7d user", "/limits show", "/system be brief"), so the engine routes
it, checks admin rights and answers the same way on every platform. Arguments are
shell-quoted because the neutral router splits command lines with shlex.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from typing import Any, Literal, Protocol

import discord
from discord import app_commands

from adapters.discord_delivery import tell
from adapters.discord_reply import SendErrors, describe_error

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]
SlashCommand = app_commands.Command[Any, ..., None]
MAX_PROMPT = 4000
UNKNOWN_COMMAND = (
    "Parley has no /{name} command here; its commands may have just changed. "
    "Try again in a minute, or see /help."
)
OUTDATED_COMMAND = (
    "Discord sent /{name} with options Parley does not expect (its commands may have "
    "just changed). Try again in a minute."
)
BAD_OPTION = "One of the options has a value Parley cannot use: {problem}"
FAILED = "Sorry, something went wrong with that command; it was logged."
FILE_OPTION = "A file for Parley to read with your question (optional)"


class Handlers(Protocol):
    async def ask(self, interaction: Interaction, prompt: str) -> None: ...
    async def chat(self, interaction: Interaction, prompt: str) -> None: ...
    async def command(self, interaction: Interaction, text: str) -> None: ...


class BadOption(app_commands.AppCommandError):
    """An option's value is not of the type the command declares. discord.py passes
    values through as Discord sent them: Discord checks them, Parley checks again."""


def text_option(value: object) -> str:
    if not isinstance(value, str):
        raise BadOption(f"text was expected, not {type(value).__name__}")
    return value


def command_line(*words: str | None) -> str:
    """'/name arg ...' with the arguments quoted and the missing ones left out."""
    name, *arguments = [text_option(word) for word in words if word]
    return " ".join([f"/{name}", *(shlex.quote(argument) for argument in arguments)])


def user_key(user: discord.User | discord.Member | None) -> str | None:
    if user is not None and not isinstance(user, discord.User | discord.Member):
        raise BadOption(f"a user was expected, not {type(user).__name__}")
    return f"discord:{user.id}" if user is not None else None


def build_commands(handlers: Handlers) -> list[SlashCommand]:
    """Every slash command, each calling into `handlers`."""
    return [*_conversation_commands(handlers), *_admin_commands(handlers)]


def _conversation_commands(handlers: Handlers) -> list[SlashCommand]:
    @app_commands.command(name="ask", description="Ask Parley; it answers in this channel")
    # `file` is read from interaction.namespace where the message is made.
    @app_commands.describe(prompt="What you would like to know", file=FILE_OPTION)
    async def ask(
        interaction: Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT],
        file: discord.Attachment | None = None,
    ) -> None:  # fmt: skip
        await handlers.ask(interaction, text_option(prompt))

    @app_commands.command(name="chat", description="Open a thread and talk with Parley there")
    @app_commands.describe(prompt="How to start the conversation", file=FILE_OPTION)
    async def chat(
        interaction: Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT],
        file: discord.Attachment | None = None,
    ) -> None:  # fmt: skip
        await handlers.chat(interaction, text_option(prompt))

    @app_commands.command(name="reset", description="Start this conversation afresh")
    async def reset(interaction: Interaction) -> None:
        await handlers.command(interaction, command_line("reset"))

    @app_commands.command(name="summarize", description="Catch up: a summary of this channel")
    @app_commands.describe(last="How much: a number of messages (50) or a period (24h)")
    async def summarize(interaction: Interaction, last: str | None = None) -> None:
        await handlers.command(interaction, command_line("summarize", last))

    @app_commands.command(name="help", description="What Parley's commands do")
    async def help_(interaction: Interaction) -> None:
        await handlers.command(interaction, command_line("help"))

    @app_commands.command(name="summary", description="What Parley keeps of older messages")
    async def summary(interaction: Interaction) -> None:
        await handlers.command(interaction, command_line("summary"))

    return [ask, chat, reset, summarize, help_, summary]


def _admin_commands(handlers: Handlers) -> list[SlashCommand]:
    @app_commands.command(name="usage", description="Your usage and limits (admins: everyone's)")
    @app_commands.describe(
        period="How far back, e.g. 24h, 7d, 30d", by="How to group (a table only)",
        chart="True: tokens and cost per day as a picture",
    )  # fmt: skip
    async def usage(
        interaction: Interaction,
        period: str = "7d",
        by: Literal["user", "channel", "model", "day"] = "user",
        chart: bool = False,
    ) -> None:
        words = ("usage", "chart", period) if chart else ("usage", period, by)
        await handlers.command(interaction, command_line(*words))

    @app_commands.command(name="limits", description="Admins: show or set per-user limits")
    @app_commands.describe(
        action="show or set", user="Whose limits", limit="Which limit to set",
        value="A number, or 'default'",
    )  # fmt: skip
    async def limits(
        interaction: Interaction,
        action: Literal["show", "set"] = "show",
        user: discord.User | None = None,
        limit: Literal["rpm", "tpd", "cost"] | None = None,
        value: str | None = None,
    ) -> None:
        line = command_line("limits", action, user_key(user), limit, value)
        await handlers.command(interaction, line)

    @app_commands.command(name="system", description="Admins: show or set this channel's prompt")
    @app_commands.describe(text="The new system prompt, or 'reset'; empty shows it")
    async def system(interaction: Interaction, text: str | None = None) -> None:
        await handlers.command(interaction, command_line("system", text))

    @app_commands.command(name="model", description="Admins: show or set this channel's model")
    @app_commands.describe(name="The model name, or 'reset'; empty shows it")
    async def model(interaction: Interaction, name: str | None = None) -> None:
        await handlers.command(interaction, command_line("model", name))

    return [usage, limits, system, model, *_moderation_commands(handlers)]


def _moderation_commands(handlers: Handlers) -> list[SlashCommand]:
    @app_commands.command(name="block", description="Admins: stop a user from using Parley")
    async def block(interaction: Interaction, user: discord.User) -> None:
        await handlers.command(interaction, command_line("block", user_key(user)))

    @app_commands.command(name="unblock", description="Admins: let a blocked user back in")
    async def unblock(interaction: Interaction, user: discord.User) -> None:
        await handlers.command(interaction, command_line("unblock", user_key(user)))

    @app_commands.command(name="forget", description="Admins: delete this channel's history")
    @app_commands.describe(confirm="Set to True within 2 minutes of asking, to go ahead")
    async def forget(interaction: Interaction, confirm: bool = False) -> None:
        await handlers.command(interaction, command_line("forget", "confirm" if confirm else None))

    @app_commands.command(name="audit", description="Admins: admin actions and moderation events")
    @app_commands.describe(
        period="How far back, e.g. 24h, 7d, 30d", action="Only this action, e.g. limits"
    )
    async def audit(
        interaction: Interaction, period: str = "7d", action: str | None = None
    ) -> None:
        await handlers.command(interaction, command_line("audit", period, action))

    @app_commands.command(name="moderation", description="Admins: moderation in this channel")
    @app_commands.describe(state="off: exempt this channel; on: follow the configuration")
    async def moderation(
        interaction: Interaction, state: Literal["off", "on"] | None = None
    ) -> None:
        await handlers.command(interaction, command_line("moderation", state))

    @app_commands.command(name="access", description="Admins: who Parley answers where")
    @app_commands.describe(
        action="show, or allow/block/remove an id", kind="What the id names",
        target="A channel (or 'here'), user or role id, e.g. discord:<guild>:<role>",
    )  # fmt: skip
    async def access(
        interaction: Interaction,
        action: Literal["show", "allow", "block", "remove"] = "show",
        kind: Literal["channel", "user", "role"] | None = None,
        target: str | None = None,
    ) -> None:
        await handlers.command(interaction, command_line("access", action, kind, target))

    return [block, unblock, forget, audit, moderation, access]


def command_failure(error: app_commands.AppCommandError) -> str:
    """What to tell the user when discord.py could not run a command."""
    if isinstance(error, app_commands.CommandNotFound):
        return UNKNOWN_COMMAND.format(name=error.name)
    if isinstance(error, app_commands.CommandSignatureMismatch):
        return OUTDATED_COMMAND.format(name=error.command.name)
    if isinstance(error, app_commands.TransformerError | BadOption):
        return BAD_OPTION.format(problem=error)
    return FAILED


class ParleyTree(app_commands.CommandTree[discord.Client]):
    """A command tree that answers every interaction it could not run."""

    async def on_error(
        self,
        interaction: discord.Interaction[discord.Client],
        error: app_commands.AppCommandError,
    ) -> None:
        if isinstance(error, app_commands.CommandInvokeError):  # a fault of Parley's
            log.error("Discord command failed (interaction %s)", interaction.id, exc_info=error)
        else:
            log.warning("Discord interaction %s not run: %s", interaction.id, error)
        await tell(interaction, command_failure(error))


async def sync_commands(tree: app_commands.CommandTree[Any], guilds: list[int]) -> None:
    """Guild commands appear at once; global ones can take up to an hour."""
    try:
        if not guilds:
            synced = await tree.sync()
            log.info("synced %d Discord slash commands globally", len(synced))
            return
        targets = [discord.Object(id=guild_id) for guild_id in guilds]
        for target in targets:
            tree.copy_global_to(guild=target)
        await asyncio.gather(*(tree.sync(guild=target) for target in targets))
        log.info("synced Discord slash commands to servers %s", guilds)
    except (*SendErrors, app_commands.CommandSyncFailure) as error:
        log.error(
            "syncing Discord slash commands failed (was the bot invited with the "
            "applications.commands scope?): %s", describe_error(error),
        )  # fmt: skip
