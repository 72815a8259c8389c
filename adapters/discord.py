"""Discord: slash commands, mentions, /chat threads and DMs, on a discord.py client.

What the bot answers:
- /ask in a channel (the conversation is the channel) and /chat, which opens a thread
  and converses there; the neutral commands (/reset, /usage, /limits, /system, /model,
  ...) answer ephemerally. Every interaction is deferred at once, then answered by
  editing the original response and followups; past the token's 15 minutes, public
  answers go to the channel instead.
- a message that mentions the bot, as a reply to it; in a DM, every message. A
  mention that reads as a command ("@Parley usage 7d", bot.commands.mention_command)
  is one, and in a channel it is pointed to the slash command.
- any message in a thread where Parley already takes part (a /chat thread), without a
  mention. Reading message text needs the privileged Message Content intent, which
  this client requests and which must be enabled in the Developer Portal.

Conversation keys: ConversationKey("discord", guild id, channel id, thread id), where
for a public thread the channel is the thread's parent and the thread is the thread's
id, so a channel's /system and /model settings apply in its threads and /forget removes
them too. A private thread is keyed as a channel of its own, ("discord", guild id,
thread id, ""): search_history searches a whole channel with its threads, and people
in the parent channel must not read what was said in a thread they cannot see. A DM is
workspace "dm" and the DM channel's id: one conversation per user.

Model output never pings anyone: allowed_mentions is none on the client and on every
send and edit, and broadcasts (@everyone, @here) are also defused in the text.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import discord
import yarl
from aiohttp import web
from discord.http import Route

from adapters.common import InFlight, neutralise_broadcasts
from adapters.discord_commands import Interaction, ParleyTree, build_commands, sync_commands
from adapters.discord_config import configure_endpoints, guild_ids, intents, invite_url
from adapters.discord_context import DiscordHistory, ReplyChains, access_fields
from adapters.discord_delivery import Backoff, acknowledged_already, deliver, tell
from adapters.discord_login import login
from adapters.discord_reply import (
    EDIT_INTERVAL_SECONDS,
    NO_MENTIONS,
    ChannelTransport,
    InteractionTransport,
    Reply,
    SendErrors,
    Transport,
    describe_error,
)
from adapters.files import discord_attachments
from bot.commands import command_name, is_command, mention_command
from bot.config import ConfigError, Settings, secret
from bot.engine import UNEXPECTED, Engine
from bot.messages import ConversationKey, Message, ReplyEvent, ReplyKind

log = logging.getLogger(__name__)

PLATFORM = "discord"
DM_WORKSPACE = "dm"
THREAD_NAME_LIMIT = 100
THREAD_ARCHIVE_MINUTES: Literal[1440] = 1440  # a day without messages
CACHE_SIZE = 1024
COMMAND_HINT = "Use the slash command /{name} here: its answer is shown only to you."
CANNOT_OPEN_THREAD = "I could not open a thread here, so I answered in the channel."
CANNOT_SEE_CHANNEL = "I cannot see this channel, so I cannot answer here."
# Said under an answer given in the channel because the command was never acknowledged.
ANSWER_TO = "An answer to {name} for {user}: Discord did not take the command in time."


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message was said, in ConversationKey terms."""

    workspace: str
    channel: str
    thread: str = ""
    ours: bool = False  # a thread Parley opened

    @property
    def is_direct(self) -> bool:
        return self.workspace == DM_WORKSPACE

    def key(self) -> ConversationKey:
        return ConversationKey(PLATFORM, self.workspace, self.channel, self.thread)


class ParleyClient(discord.Client):
    """A discord.py client that hands its events to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self.adapter = adapter
        self.tree = ParleyTree(self)
        for command in build_commands(adapter):
            self.tree.add_command(command)

    async def setup_hook(self) -> None:
        # Runs once per login, not on every (re)connect: syncing commands on each
        # on_ready would hit Discord's tight limits on command registration.
        await self.adapter.setup(self)

    async def on_connect(self) -> None:
        self.adapter.on_connect(self, None)

    async def on_shard_connect(self, shard_id: int) -> None:
        self.adapter.on_connect(self, shard_id)

    async def on_resumed(self) -> None:
        self.adapter.live = True

    async def on_disconnect(self) -> None:
        self.adapter.live = False

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.tracked(self.adapter.on_message(message))

    # A deleted or edited message is no longer quoted as it was.
    async def on_raw_message_delete(self, event: discord.RawMessageDeleteEvent) -> None:
        self.adapter.chains.forget(event.channel_id, event.message_id)

    async def on_raw_message_edit(self, event: discord.RawMessageUpdateEvent) -> None:
        self.adapter.chains.forget(event.channel_id, event.message_id)


class ShardedParleyClient(ParleyClient, discord.AutoShardedClient):
    """The same client over several gateway shards, for bots in many servers."""


class DiscordAdapter:
    name = PLATFORM

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        guilds: list[int],
        pinned_gateway: yarl.URL | None = None,
        edit_interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], datetime.datetime] = discord.utils.utcnow,
        backoff: Backoff | None = None,
    ) -> None:
        self.engine = engine
        self.backoff = backoff or Backoff()
        self.settings = settings
        self.guilds = guilds
        self.pinned_gateway = pinned_gateway
        self.edit_interval = edit_interval
        self.clock = clock
        self.client: ParleyClient | None = None
        self.live = False
        self._task: asyncio.Task[None] | None = None
        self.in_flight = InFlight()
        # channels discord.py has not cached: their thread, or None if not a thread
        self._threads: dict[int, discord.Thread | None] = {}
        self._hinted: dict[int, None] = {}  # message ids answered with COMMAND_HINT
        self.chains = ReplyChains()
        engine.summaries.register(PLATFORM, DiscordHistory(lambda: self.client))

    # -- the Adapter protocol -----------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Discord reaches us over the gateway websocket: no HTTP routes."""

    async def start(self) -> None:
        token = secret("DISCORD_BOT_TOKEN")
        if not token:
            raise ConfigError("Discord: set DISCORD_BOT_TOKEN")
        options: dict[str, Any] = {
            "intents": intents(),
            "allowed_mentions": NO_MENTIONS,
            # A longer Discord rate limit raises RateLimited (logged) instead of
            # stalling a streaming answer for minutes.
            "max_ratelimit_timeout": 30.0,
        }
        settings = self.settings
        if settings.discord_shard_ids:
            # This process runs some of the shards; the other replicas run the rest.
            options["shard_count"] = settings.discord_shard_count
            options["shard_ids"] = list(settings.discord_shard_ids)
        sharded = settings.discord_sharded or bool(settings.discord_shard_ids)
        self.client = (ShardedParleyClient if sharded else ParleyClient)(self, **options)
        api = os.environ.get("PARLEY_DISCORD_API_URL", "").strip() or "Discord"
        await login(self.client, token, settings.discord_login_retry_seconds, api)
        # Set when the gateway refuses for good: the runner then stops the process.
        self.fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(self.client), name="discord")

    async def stop(self) -> None:
        # The gateway stays open while answers finish: Discord never delivers a message
        # again, so one arriving now is answered too, or, if the grace period runs out,
        # left to recovery by the next process.
        await self.in_flight.drain(self.settings.shutdown_grace_seconds)
        if self.client is not None:
            await self.client.close()
        if self._task is not None:
            # Bounded waits, never wait_for: a client stuck reconnecting may swallow a
            # cancellation, and shutdown must not hang on it.
            if not (await asyncio.wait({self._task}, timeout=5))[0]:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1)
        self.live = False

    async def send_direct(self, user: str, text: str) -> bool:
        """A direct message to one user (admin alerts, bot/alerts.py)."""
        if self.client is None or not user.isdigit():
            return False
        try:
            channel = await self.client.create_dm(discord.Object(int(user)))
            await channel.send(
                neutralise_broadcasts(text)[:2000], allowed_mentions=discord.AllowedMentions.none()
            )
        except SendErrors as error:
            log.warning("discord: direct message to %s failed: %s", user, describe_error(error))
            return False
        return True

    def connected(self) -> bool:
        return self.live and self.client is not None and not self.client.is_closed()

    async def _run(self, client: ParleyClient) -> None:
        try:
            await client.connect()  # logged in by start(); discord.py reconnects itself
        except discord.PrivilegedIntentsRequired:
            self.fatal.set_result(
                "Discord refused the Message Content intent: enable it under Bot > "
                "Privileged Gateway Intents in the Developer Portal"
            )
        except Exception:
            log.exception("the Discord client stopped")
        finally:
            self.live = False

    # -- connection ---------------------------------------------------------------------

    async def setup(self, client: ParleyClient) -> None:
        splitting = bool(self.settings.discord_shard_ids)
        if isinstance(client, discord.AutoShardedClient) and self.pinned_gateway and not splitting:
            # AutoShardedClient would connect to the URL /gateway/bot names (Discord's
            # own); asking only for the shard count keeps it on the pinned gateway.
            client.shard_count = (await client.http.get_bot_gateway())[0]
        if not splitting or 0 in self.settings.discord_shard_ids:
            # One replica registers the slash commands for all: Discord rate-limits
            # registration tightly, and they are the same for every shard.
            await sync_commands(client.tree, self.guilds)
        if client.application_id is not None:
            log.info("Invite Parley to a server: %s", invite_url(client.application_id))

    def on_connect(self, client: ParleyClient, shard_id: int | None) -> None:
        self.live = True
        sharded = isinstance(client, discord.AutoShardedClient)
        if self.pinned_gateway is None or sharded != (shard_id is not None):
            return
        # discord.py resumes at READY's resume_gateway_url; through a proxy, resume
        # through the proxy too.
        client._get_websocket(shard_id=shard_id).gateway = self.pinned_gateway

    async def tracked(self, work: Awaitable[None]) -> None:
        """Run one answer, so that stop() waits for answers in progress."""
        await self.in_flight.track(work)

    async def recover(self, message: Message, events: AsyncIterator[ReplyEvent]) -> None:
        """Answer a message another process claimed and never answered, where it was
        asked (an interaction's token may have expired: its channel instead)."""
        if self.client is None:
            return
        channel = self.client.get_partial_messageable(int(message.thread or message.channel))
        reply = Reply(ChannelTransport(channel), interval=self.edit_interval)
        async for event in events:
            await reply.apply(event)
        await reply.finish()

    # -- messages -----------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        client = self.client
        if client is None or client.user is None or message.author.bot:
            return  # other bots and our own messages (Discord echoes them back)
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        # A reply to Parley's own answer goes on without a mention.
        mentioned = self._mentions_me(message, client.user.id) or (
            await self.chains.replies_to(message, client.user.id)
        )
        place = await self._place(message.channel, message.guild)
        if place is None:
            return
        if not (mentioned or place.is_direct or await self._follows(place)):
            return
        text = _strip_mentions(message.content, client.user.id, message.guild)
        if mentioned and (text or not message.attachments):
            # "@Parley usage 7d" is a command, "@Parley model this for me" a question.
            text = mention_command(text) or text
        transport = ChannelTransport(message.channel, message if mentioned else None)
        if is_command(text) and not place.is_direct:
            await self._hint(message.id, transport, text)
            return
        if not is_command(text):
            settings = self.engine.settings  # live: the config file may have changed
            text = await self.chains.with_chain(
                message, text, settings.discord_reply_chain_depth, settings.max_input_chars
            )
        await self.answer(self._message(message, place, text), transport)

    async def _hint(self, message_id: int, transport: Transport, text: str) -> None:
        """A typed command in a channel: answering it there would show admin replies
        to everyone, so point to the slash command (whose answer is ephemeral)."""
        if message_id in self._hinted:
            return  # a gateway replay after a resume; the engine's dedupe never saw it
        _remember(self._hinted, message_id, None)
        name = command_name(text)
        reply = Reply(transport, interval=self.edit_interval)
        await reply.apply(ReplyEvent(ReplyKind.ERROR, COMMAND_HINT.format(name=name)))

    async def _follows(self, place: Place) -> bool:
        """A thread Parley opened and talks in (/chat) goes on without mentions; in
        other threads, as in channels, people mention Parley when they want it."""
        return place.ours and await self.engine.knows_conversation(place.key())

    @staticmethod
    def _mentions_me(message: discord.Message, my_id: int) -> bool:
        if any(user.id == my_id for user in message.mentions):
            return True
        # "@Parley" may resolve to the bot's managed role instead of the bot itself.
        own_role = message.guild.self_role if message.guild else None
        return own_role is not None and own_role in message.role_mentions

    def _message(self, message: discord.Message, place: Place, text: str) -> Message:
        return Message(
            PLATFORM, place.workspace, place.channel, str(message.author.id), text,
            thread=place.thread, dedupe_keys=(f"discord:msg:{message.id}",),
            platform_admin=_manages_guild(message.author),
            **access_fields(message.author, message.channel, place.is_direct),
            attachments=discord_attachments(
                message.attachments, Route.BASE, self.settings.attachment_timeout_seconds
            ),
        )  # fmt: skip

    async def _place(self, channel: Any, guild: discord.Guild | None) -> Place | None:
        if channel is None:
            return None
        if guild is None:
            return Place(DM_WORKSPACE, str(channel.id))
        thread = channel if isinstance(channel, discord.Thread) else None
        if isinstance(channel, discord.PartialMessageable):
            thread = await self._uncached_thread(channel.id)
        if thread is None:
            return Place(str(guild.id), str(channel.id))
        me = self.client.user if self.client else None
        ours = me is not None and thread.owner_id == me.id
        if thread.type is discord.ChannelType.private_thread:
            # Its own channel, so channel-wide history search never reaches into it.
            return Place(str(guild.id), str(thread.id), ours=ours)
        return Place(str(guild.id), str(thread.parent_id), str(thread.id), ours=ours)

    async def _uncached_thread(self, channel_id: int) -> discord.Thread | None:
        """A channel discord.py has not cached, looked up once (GET /channels/{id})."""
        if channel_id not in self._threads:
            assert self.client is not None
            try:
                channel = await self.client.fetch_channel(channel_id)
            except (*SendErrors, discord.InvalidData) as error:
                log.warning("could not look up channel %s: %s", channel_id, describe_error(error))
                return None
            thread = channel if isinstance(channel, discord.Thread) else None
            _remember(self._threads, channel_id, thread)
        return self._threads[channel_id]

    # -- interactions -------------------------------------------------------------------

    async def ask(self, interaction: Interaction, prompt: str) -> None:
        await self.tracked(self._ask(interaction, prompt))

    async def chat(self, interaction: Interaction, prompt: str) -> None:
        await self.tracked(self._chat(interaction, prompt))

    async def command(self, interaction: Interaction, text: str) -> None:
        await self.tracked(self._command(interaction, text))

    async def _ask(self, interaction: Interaction, prompt: str, *, notice: str = "") -> None:
        if not interaction.response.is_done():
            deferred = await self._defer(interaction, False)
            if deferred is False:
                await self._answer_in_channel(interaction, prompt, "/ask")
            if not deferred:
                return
        place = await self._place(interaction.channel, interaction.guild)
        if place is None:
            await tell(interaction, CANNOT_SEE_CHANNEL)
            return
        message = self._interaction_message(interaction, place, prompt)
        transport = self._interaction_transport(interaction, private=False)
        await self.answer(message, transport, notices=[notice] if notice else [])

    async def _chat(self, interaction: Interaction, prompt: str) -> None:
        deferred = await self._defer(interaction, False)
        if deferred is False:
            await self._answer_in_channel(interaction, prompt, "/chat")
        if not deferred:
            return
        channel, guild = interaction.channel, interaction.guild
        if guild is None or not isinstance(channel, discord.TextChannel):
            await self._ask(interaction, prompt)  # DMs and threads: converse in place
            return
        thread = await self._open_thread(interaction, prompt)
        if thread is None:
            await self._ask(interaction, prompt, notice=CANNOT_OPEN_THREAD)
            return
        place = Place(str(guild.id), str(channel.id), str(thread.id))
        message = self._interaction_message(interaction, place, prompt)
        await self.answer(message, ChannelTransport(thread))

    async def _open_thread(self, interaction: Interaction, prompt: str) -> discord.Thread | None:
        """Turn the /chat response into the starter message of a new public thread."""
        who = interaction.user.display_name
        header = f"💬 **{who}** started a conversation: {prompt}"
        try:
            starter = await interaction.edit_original_response(
                content=_clip(header), allowed_mentions=NO_MENTIONS
            )
            return await starter.create_thread(
                name=thread_name(prompt), auto_archive_duration=THREAD_ARCHIVE_MINUTES
            )
        except SendErrors as error:
            log.warning(
                "could not open a /chat thread for interaction %s in channel %s: %s",
                interaction.id, interaction.channel_id, describe_error(error),
            )  # fmt: skip
            return None

    async def _command(self, interaction: Interaction, text: str) -> None:
        """A neutral command: every answer is private, so the deferral is ephemeral."""
        deferred = await self._defer(interaction, True)
        if deferred is False:
            # Its answer is private, and without the interaction there is no private
            # place to give it: the user sees Discord's own "did not respond".
            self._undelivered(f"/{command_name(text)} (interaction {interaction.id})")
        if not deferred:
            return
        place = await self._place(interaction.channel, interaction.guild)
        if place is None:
            await tell(interaction, CANNOT_SEE_CHANNEL)
            return
        message = self._interaction_message(interaction, place, text)
        await self.answer(message, self._interaction_transport(interaction, private=True))

    async def _defer(self, interaction: Interaction, private: bool) -> bool | None:
        """Acknowledge within Discord's 3 seconds, before any slow work. True: done;
        None: it was acknowledged already (a replay), nothing more to do; False: failed."""
        try:
            await interaction.response.defer(thinking=True, ephemeral=private)
        except (*SendErrors, discord.InteractionResponded) as error:
            log.warning("could not defer interaction %s: %s", interaction.id, describe_error(error))
            return None if acknowledged_already(error) else False
        return True

    async def _answer_in_channel(self, interaction: Interaction, prompt: str, name: str) -> None:
        """A public question whose interaction was never acknowledged (Discord refused or
        it came too late): its token is of no use, so answer in the channel instead."""
        channel = interaction.channel
        place = await self._place(channel, interaction.guild)
        if place is None or not isinstance(channel, discord.abc.Messageable):
            self._undelivered(f"{name} (interaction {interaction.id})")
            return
        message = self._interaction_message(interaction, place, prompt)
        notice = ANSWER_TO.format(name=name, user=interaction.user.display_name)
        await self.answer(message, ChannelTransport(channel), notices=[notice])

    def _interaction_transport(self, interaction: Interaction, *, private: bool) -> Transport:
        return InteractionTransport(interaction, private=private, clock=self.clock)

    def _interaction_message(self, interaction: Interaction, place: Place, text: str) -> Message:
        user = interaction.user
        return Message(
            PLATFORM, place.workspace, place.channel, str(user.id), text,
            thread=place.thread, dedupe_keys=(f"discord:interaction:{interaction.id}",),
            platform_admin=_manages_guild(user), single_turn=True,
            **access_fields(user, interaction.channel, place.is_direct),
            attachments=discord_attachments(
                _option_files(interaction), Route.BASE, self.settings.attachment_timeout_seconds
            ),
        )  # fmt: skip

    # -- answering ----------------------------------------------------------------------

    async def answer(
        self, message: Message, transport: Transport, *, notices: list[str] | None = None
    ) -> None:
        """Run the engine and show its events; never stop early (the reply is stored)."""
        reply = Reply(transport, interval=self.edit_interval)
        reply.notices.extend(notices or [])
        try:
            async for event in self.engine.handle(message):
                await reply.apply(event)
        except Exception:
            log.exception("answering %s failed", message.conversation)
            await reply.apply(ReplyEvent(ReplyKind.ERROR, UNEXPECTED))
        if reply.undelivered() and not await deliver(reply, self.backoff):
            error = describe_error(reply.last_error) if reply.last_error else "?"
            self._undelivered(f"the stored answer for {reply.transport.describe()} ({error})")
        await reply.finish()

    def _undelivered(self, what: str) -> None:
        """Logged and counted (parley_delivery_failures_total): nobody is told otherwise."""
        log.error("Discord: could not deliver %s", what)
        self.engine.metrics.delivery_failures.labels(PLATFORM).inc()


def _remember(cache: dict[int, Any], key: int, value: Any) -> None:
    """Insert into a small cache, dropping the oldest entry when full."""
    if len(cache) >= CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _option_files(interaction: Interaction) -> list[discord.Attachment]:
    """The file given with /ask or /chat (their `file` option), if any."""
    given = getattr(interaction.namespace, "file", None)
    return [given] if isinstance(given, discord.Attachment) else []


def _manages_guild(user: discord.User | discord.Member) -> bool:
    """Discord's Manage Server permission: the engine trusts it where config allows."""
    return isinstance(user, discord.Member) and user.guild_permissions.manage_guild


def _strip_mentions(text: str, my_id: int, guild: discord.Guild | None) -> str:
    text = re.sub(rf"<@!?{my_id}>", "", text)
    own_role = guild.self_role if guild else None
    if own_role is not None:
        text = text.replace(own_role.mention, "")
    return text.strip()


def thread_name(prompt: str) -> str:
    first_line = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    name = first_line or "Parley chat"
    return name if len(name) <= THREAD_NAME_LIMIT else name[: THREAD_NAME_LIMIT - 1] + "…"


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def create(engine: Engine, settings: Settings) -> DiscordAdapter:
    pinned = configure_endpoints(os.environ)
    return DiscordAdapter(
        engine,
        settings,
        guilds=guild_ids(os.environ.get("DISCORD_GUILD_IDS", "")),
        pinned_gateway=pinned,
    )
