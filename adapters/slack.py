"""Slack adapter: slack-bolt AsyncApp over Socket Mode or the HTTP Events API.

Slack events become neutral Messages for the engine; its ReplyEvents are rendered by
adapters.slack_format. Listeners only decide and spawn a task, so Slack's 3-second
acknowledgement never waits for the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.common import InFlight, split_message
from adapters.files import file_objects, slack_attachments
from adapters.slack_events import (
    EventEnvelope,
    SlackEvent,
    SlashCommand,
    command_problem,
    envelope_message_key,
    envelope_problem,
    event_problem,
    message_key,
    signature_valid,
)
from adapters.slack_files import complete_files
from adapters.slack_format import (
    PLAIN_LIMIT,
    Api,
    Capabilities,
    SlackReply,
    Target,
    clean,
    error_code,
    to_mrkdwn,
)
from adapters.slack_history import SHORTCUT_ID, SlackHistory, shortcut_incoming
from bot.commands import command_name, mention_command
from bot.config import ConfigError, Settings, secret
from bot.engine import Accepted, Engine
from bot.http_guard import RateLimitedLog
from bot.messages import ConversationKey, Message, ReplyEvent

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
EVENTS_PATH = "/slack/events"
COMMAND = "/parley"
ADMIN_CACHE_SECONDS = 300.0
RESET_IN_THREAD = "To reset a thread's conversation, say @Parley reset in that thread."
# Message subtypes that are a person saying something; every other subtype (edits,
# deletions, joins, topic changes...) is not addressed to Parley.
USER_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
# auth.test errors that no retry will fix: stop at start with a clear message.
BAD_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


@dataclass(frozen=True, slots=True)
class UserInfo:
    admin: bool
    name: str = ""  # the display name, for /summarize


class UserDirectory:
    """users.info per user, cached: who is a workspace admin.

    Concurrent lookups of one user share one call, so two quick messages from the same
    person reach the engine in the order they were sent.
    """

    def __init__(self, client: AsyncWebClient, ttl: float = ADMIN_CACHE_SECONDS) -> None:
        self.client = client
        self.ttl = ttl
        self.cache: dict[tuple[str, str], tuple[float, asyncio.Task[UserInfo | None]]] = {}

    async def get(self, team: str, user: str) -> UserInfo:
        now = time.monotonic()
        cached = self.cache.get((team, user))
        if cached is None or now - cached[0] >= self.ttl:
            cached = (now, asyncio.create_task(self._fetch(team, user)))
            self.cache[(team, user)] = cached
        info = await asyncio.shield(cached[1])  # one cancelled waiter must not cancel all
        if info is None:  # failed: ask again next time rather than for minutes
            if self.cache.get((team, user)) is cached:
                del self.cache[(team, user)]
            return UserInfo(False)
        return info

    async def _fetch(self, team: str, user: str) -> UserInfo | None:
        try:
            response = await self.client.users_info(user=user)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
            # Not knowing costs this message its admin rights, never its answer.
            log.warning("slack users.info failed for %s: %s", user, error_code(error))
            return None
        data = cast(dict[str, Any], response.get("user") or {})
        # In a Slack Connect channel the user may be another organisation's admin:
        # only admins of the workspace the message came from count.
        own_team = data.get("team_id", team) == team
        admin = own_team and bool(data.get("is_admin") or data.get("is_owner"))
        profile = data.get("profile") or {}
        name = profile.get("display_name") or data.get("real_name") or data.get("name") or ""
        return UserInfo(admin, str(name))


@dataclass(frozen=True, slots=True)
class Incoming:
    """A user message Parley will answer, before the user lookup."""

    team: str
    channel: str
    user: str
    text: str
    thread: str  # the conversation's thread: "" for an unthreaded DM
    dedupe_keys: tuple[str, ...]
    is_direct: bool
    files: tuple[Mapping[str, Any], ...] = ()  # the event's file objects, as sent


def mention_pattern(bot_user_id: str) -> re.Pattern[str]:
    return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>")


def unescape(text: str) -> str:
    """Slack escapes &, < and > in message text; the model should see them plain."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def dedupe_keys(*keys: tuple[str, str]) -> tuple[str, ...]:
    """(prefix, id) pairs -> dedupe keys, leaving out those with no id.

    A key made of a prefix alone ("slack:event:") would be shared by every delivery
    that lacks the id, and each of them after the first would be dropped as a repeat.
    """
    return tuple(prefix + ident for prefix, ident in keys if ident)


class _TokenNotUnused(logging.Filter):
    """Bolt warns "`token` will be unused" whenever SLACK_BOT_TOKEN is set and a client
    is given; the token is used, by that client, so the warning only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_BOLT_LOG = logging.getLogger("slack_bolt.AsyncApp")
# Anyone can post junk to the endpoint: a flood of it must not flood the log too.
_UNSIGNED_LOG = RateLimitedLog(log)
_TOKEN_FILTER = _TokenNotUnused()


class SlackAdapter:
    name = "slack"

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        token: str,
        signing_secret: str,
        app_token: str = "",
        api_url: str = DEFAULT_API_URL,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.client = AsyncWebClient(token=token, base_url=api_url.rstrip("/") + "/")
        # Bolt copies these handlers into the per-request clients, so 429s are retried
        # (after Retry-After) by every call the adapter makes.
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        if _TOKEN_FILTER not in _BOLT_LOG.filters:
            _BOLT_LOG.addFilter(_TOKEN_FILTER)
        # process_before_response: listeners only spawn a task, so running them before
        # the ack costs nothing and guarantees the task exists once Slack has its 200.
        # No request verification in bolt: _http_events checks the signature before
        # anything is parsed, and Socket Mode events carry none.
        self.app = AsyncApp(
            client=self.client, signing_secret=signing_secret, process_before_response=True,
            request_verification_enabled=False, name="parley",
        )  # fmt: skip
        self.users = UserDirectory(self.client)
        self.capabilities = Capabilities()
        self.socket: AsyncSocketModeHandler | None = None
        self.in_flight = InFlight()
        self.authenticated = False
        self.bot_user_id = ""
        self._register()

    def _register(self) -> None:
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("assistant_thread_started")(self._on_assistant_thread)
        self.app.command(COMMAND)(self._on_command)
        self.app.shortcut(SHORTCUT_ID)(self._on_shortcut)
        self.engine.summaries.register("slack", SlackHistory(self))

    # -- the runner's Adapter protocol ---------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        if not self.app_token:
            app.router.add_post(EVENTS_PATH, self._http_events)

    async def start(self) -> None:
        # One HTTP session for every Web API call instead of one per call.
        self.client.session = aiohttp.ClientSession()
        await self._authenticate()
        if self.app_token:
            self.socket = AsyncSocketModeHandler(self.app, self.app_token)
            await self.socket.connect_async()  # type: ignore[no-untyped-call]  # bolt: untyped
            log.info("slack: connected with Socket Mode")
        else:
            log.info("slack: serving the Events API at POST %s", EVENTS_PATH)

    async def stop(self) -> None:
        """Take no new events (Socket Mode closes; HTTP answers 503, so Slack retries
        them, on another replica if there is one), finish the answers in progress."""
        self.in_flight.accepting = False
        if self.socket is not None:
            await self.socket.close_async()  # type: ignore[no-untyped-call]  # bolt: untyped
        await self.in_flight.drain(self.settings.shutdown_grace_seconds)
        if self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    async def send_direct(self, user: str, text: str) -> bool:
        """A direct message to one user (admin alerts, bot/alerts.py)."""
        try:
            opened = await self.client.conversations_open(users=user)
            channel = cast(dict[str, Any], opened.get("channel") or {}).get("id", "")
            await self.client.chat_postMessage(channel=channel, text=clean(text))
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("slack: direct message to %s failed: %s", user, error_code(error))
            return False
        return True

    def connected(self) -> bool:
        if self.socket is None:
            return self.authenticated
        session = self.socket.client.current_session
        return not self.socket.client.closed and session is not None and not session.closed

    async def drain(self) -> None:
        """Wait until every answer in progress is done (tests)."""
        await self.in_flight.wait()

    async def _authenticate(self) -> None:
        try:
            response = await self.client.auth_test()
        except SlackApiError as error:
            if error_code(error) in BAD_TOKEN_ERRORS:
                raise ConfigError(
                    f"Slack: SLACK_BOT_TOKEN was refused by auth.test ({error_code(error)})"
                ) from None
            log.warning("slack auth.test failed: %s; continuing", error_code(error))
            return
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
            # Slack may be briefly unreachable; bolt authenticates again on first event.
            log.warning("slack auth.test failed: %s; continuing", error_code(error))
            return
        self.bot_user_id = str(response.get("user_id", ""))
        self.authenticated = True

    async def _http_events(self, request: web.Request) -> web.Response:
        """Verify, then check the shape, and only then let bolt parse and route it."""
        if not self.in_flight.accepting:
            return web.json_response({"error": "shutting down"}, status=503)
        body = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not signature_valid(self.signing_secret, body, timestamp, signature, time.time()):
            _UNSIGNED_LOG.log(logging.INFO, "slack: refused a request without a valid signature")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = AsyncBoltRequest(
                body=body.decode("utf-8"), query=request.query_string,
                headers=dict(request.headers),
            )  # fmt: skip
        except Exception as error:  # bolt parses and reads ids with no type checks at all
            return _ignored_request(f"bolt cannot read it ({type(error).__name__})")
        if problem := envelope_problem(bolt_request.body):
            return _ignored_request(problem)
        key = envelope_message_key(bolt_request.body)
        if key and self.engine.delivered_here(key):
            return web.Response()  # the mention's second event, or a retry: taken already
        response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.in_flight.spawn(work)

    # -- events -> Incoming ----------------------------------------------------------

    async def _on_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        self._seen(context)
        incoming = await self._incoming(cast(EventEnvelope, body), context, mentioned=True)
        if incoming is not None:
            await self._accept(incoming)

    async def _on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        self._seen(context)
        incoming = await self._incoming(cast(EventEnvelope, body), context, mentioned=False)
        if incoming is not None:
            await self._accept(incoming)

    async def _accept(self, incoming: Incoming) -> None:
        """Claim the message before Slack gets its acknowledgement (listeners run
        first), so that a thread's messages are answered in the order Slack delivered
        them, even by different replicas; the answer itself runs in a task."""
        accepted = await self.engine.accept(self._neutral(incoming, admin=False))
        if accepted is not None:
            self._spawn(self._answer(incoming, accepted))

    def _seen(self, context: AsyncBoltContext) -> None:
        # Bolt authenticated this event: the token works even if auth.test at start failed.
        if context.bot_user_id:
            self.bot_user_id = self.bot_user_id or context.bot_user_id
            self.authenticated = True

    async def _on_assistant_thread(self, body: dict[str, Any]) -> None:
        # The assistant pane opened: nothing to say until the user writes (message.im).
        return None

    async def _incoming(
        self, body: EventEnvelope, context: AsyncBoltContext, *, mentioned: bool
    ) -> Incoming | None:
        raw: dict[str, Any] = dict(body.get("event") or {})
        if problem := event_problem(raw):  # Socket Mode events come unchecked
            log.warning("slack: ignored a malformed event: %s", problem)
            return None
        event = cast(SlackEvent, {name: value for name, value in raw.items() if value is not None})
        bot_user_id = context.bot_user_id or self.bot_user_id
        reason = self._ignored(event, context)
        if reason:
            log.debug("slack: ignored %s event: %s", event.get("type"), reason)
            return None
        team = context.team_id or body.get("team_id") or event.get("team", "")
        channel, ts = event.get("channel", ""), event.get("ts", "")
        text = event.get("text", "")
        mention = mention_pattern(bot_user_id) if bot_user_id else None
        mentioned = mentioned or bool(mention and mention.search(text))
        is_direct = event.get("channel_type") == "im"
        thread = event.get("thread_ts") or ("" if is_direct else ts)
        if not (mentioned or is_direct or await self._follows_up(team, channel, event)):
            return None
        text = unescape(mention.sub("", text) if mention else text).strip()
        files = file_objects(raw.get("files"))
        if mentioned and (text or not files):
            # "@Parley usage 7d" is a command, "@Parley model this for me" a question.
            # A bare mention becomes /help: unlike an empty message (which the engine
            # refuses before deduplicating) it is answered once despite Slack's double
            # delivery of a mention as app_mention and message.
            text = mention_command(text) or text
        keys = (*dedupe_keys(("slack:event:", body.get("event_id", ""))),
                message_key(team, channel, ts))  # fmt: skip
        user = event.get("user") or event.get("bot_id", "")
        return Incoming(team, channel, user, text, thread, keys, is_direct, files)

    def _ignored(self, event: SlackEvent, context: AsyncBoltContext) -> str:
        subtype = event.get("subtype", "")
        from_bot = bool(event.get("bot_id")) or subtype == "bot_message"
        own = (event.get("bot_id") and event.get("bot_id") == context.bot_id) or (
            event.get("user") and event.get("user") in (context.bot_user_id, self.bot_user_id)
        )
        if own:
            return "our own message"
        if from_bot and not self.settings.slack_allow_bots:
            return "from another bot (slack.allow_bots is off)"
        if subtype not in USER_SUBTYPES and not (subtype == "bot_message" and from_bot):
            return f"subtype {subtype}"
        if not event.get("channel") or not event.get("ts"):
            return "no channel or ts"
        return ""

    async def _follows_up(self, team: str, channel: str, event: SlackEvent) -> bool:
        """A reply in a thread Parley already takes part in needs no new mention."""
        thread_ts = event.get("thread_ts", "")
        key = ConversationKey("slack", team, channel, thread_ts)
        return bool(thread_ts) and await self.engine.knows_conversation(key)

    # -- answering -------------------------------------------------------------------

    async def _answer(self, incoming: Incoming, accepted: Accepted | None = None) -> None:
        target = Target(incoming.channel, incoming.thread, incoming.team, incoming.user)
        api = Api(self.client, target)
        private = self._ephemeral_sender(api, incoming.is_direct)
        reply = SlackReply(api, self.capabilities, private, direct=incoming.is_direct)
        await self._run(self._message(incoming), reply, accepted)

    async def _message(self, incoming: Incoming) -> Message:
        info = UserInfo(False)
        if incoming.user.startswith(("U", "W")):  # a person, not a bot id
            info = await self.users.get(incoming.team, incoming.user)
        files = await complete_files(self.client, incoming.files)
        return self._neutral(replace(incoming, files=files), info.admin)

    def _neutral(self, incoming: Incoming, admin: bool) -> Message:
        route = {"direct": "1"} if incoming.is_direct else {}
        files = slack_attachments(
            incoming.files, self.client.token or "", self.client.base_url,
            self.settings.attachment_timeout_seconds,
        )  # fmt: skip
        return Message(
            platform="slack", workspace=incoming.team, channel=incoming.channel,
            user=incoming.user, text=incoming.text, thread=incoming.thread,
            dedupe_keys=incoming.dedupe_keys, platform_admin=admin, route=route,
            is_direct=incoming.is_direct,
            attachments=files,
        )  # fmt: skip

    async def recover(self, message: Message, events: AsyncIterator[ReplyEvent]) -> None:
        """Answer a message another process claimed and never answered, in its thread."""
        incoming = Incoming(
            message.workspace, message.channel, message.user, message.text, message.thread,
            message.dedupe_keys, message.route.get("direct") == "1",
        )  # fmt: skip
        target = Target(incoming.channel, incoming.thread, incoming.team, incoming.user)
        api = Api(self.client, target)
        private = self._ephemeral_sender(api, incoming.is_direct)
        reply = SlackReply(api, self.capabilities, private, direct=incoming.is_direct)
        try:
            async for event in events:
                await reply.handle(event)
        except Exception:
            log.exception("slack: a recovered answer failed (channel %s)", message.channel)
        finally:
            await reply.close()

    async def _run(
        self, message: Awaitable[Message], reply: SlackReply, accepted: Accepted | None = None
    ) -> None:
        """Feed one message through the engine; a failure is logged, never raised."""
        target = reply.target
        try:
            async for event in self.engine.handle(await message, accepted):
                await reply.handle(event)
        except Exception:
            log.exception("slack: answering failed (channel %s, thread %s)",
                          target.channel, target.thread_ts or "-")  # fmt: skip
        finally:
            await reply.close()

    def _ephemeral_sender(self, api: Api, is_direct: bool) -> Callable[[str], Awaitable[None]]:
        async def send(text: str) -> None:
            for part in split_message(text, PLAIN_LIMIT):
                if is_direct:  # a DM is private already; ephemerals there vanish on reload
                    await api.post(part)
                    continue
                thread = {"thread_ts": api.target.thread_ts} if api.target.thread_ts else {}
                await api.call(
                    "chat_postEphemeral", channel=api.target.channel, user=api.target.user,
                    markdown_text=part, **thread,
                )  # fmt: skip

        return send

    async def _on_shortcut(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        """The "Summarize thread" message shortcut: answered in the message's thread."""
        await ack()
        incoming = shortcut_incoming(body)
        if incoming is None:
            log.warning("slack: ignored a malformed %s shortcut", SHORTCUT_ID)
            return
        self._spawn(self._answer(incoming))

    # -- /parley ---------------------------------------------------------------------

    async def _on_command(
        self,
        ack: Callable[[], Awaitable[None]],
        body: dict[str, Any],
        respond: Callable[..., Awaitable[Any]],
    ) -> None:
        await ack()
        if problem := command_problem(body):
            log.warning("slack: ignored a malformed /parley command: %s", problem)
            return
        command = cast(SlashCommand, {k: v for k, v in body.items() if v is not None})
        self._spawn(self._slash(command, respond))

    async def _slash(self, command: SlashCommand, respond: Callable[..., Awaitable[Any]]) -> None:
        team, channel = command.get("team_id", ""), command.get("channel_id", "")
        send = self._responder(channel, respond)
        # DM ids start with D. Slash commands carry no thread_ts, and channel
        # conversations live in threads: a reset here would reset no conversation.
        if command_name(command.get("text", "")) == "reset" and not channel.startswith("D"):
            await send(RESET_IN_THREAD)
            return
        target = Target(channel, "", team, command.get("user_id", ""))
        reply = SlackReply(Api(self.client, target), self.capabilities, send, all_private=True)
        await self._run(self._slash_message(command), reply)

    async def _slash_message(self, command: SlashCommand) -> Message:
        team, user = command.get("team_id", ""), command.get("user_id", "")
        info = await self.users.get(team, user)
        return Message(
            platform="slack", workspace=team, channel=command.get("channel_id", ""), user=user,
            text="/" + (command.get("text", "").strip().lstrip("/") or "help"),
            platform_admin=info.admin, is_direct=command.get("channel_id", "").startswith("D"),
            dedupe_keys=dedupe_keys(("slack:command:", command.get("trigger_id", ""))),
        )  # fmt: skip

    @staticmethod
    def _responder(
        channel: str, respond: Callable[..., Awaitable[Any]]
    ) -> Callable[[str], Awaitable[None]]:
        """Private replies to a /parley command, through its response_url."""

        async def send(text: str) -> None:
            for part in split_message(clean(text), PLAIN_LIMIT):
                try:
                    await respond(text=to_mrkdwn(part), response_type="ephemeral")
                except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
                    log.warning("slack: /parley response failed (channel %s): %s",
                                channel, error_code(error))  # fmt: skip

        return send


def _ignored_request(problem: str) -> web.Response:
    """A signed request Parley cannot use: one log line, and a 200 so Slack does not
    retry what would fail again."""
    log.warning("slack: ignored a signed request: %s", problem)
    return web.Response(status=200)


def create(engine: Engine, settings: Settings) -> SlackAdapter:
    """The runner's entry point; secrets and the API URL come from the environment."""
    token = secret("SLACK_BOT_TOKEN")
    app_token = secret("SLACK_APP_TOKEN")
    signing_secret = secret("SLACK_SIGNING_SECRET")
    if not token:
        raise ConfigError("Slack: set SLACK_BOT_TOKEN (xoxb-...)")
    if not app_token and not signing_secret:
        raise ConfigError(
            "Slack: set SLACK_SIGNING_SECRET for the HTTP Events API, "
            "or SLACK_APP_TOKEN (xapp-...) for Socket Mode"
        )
    api_url = os.environ.get("PARLEY_SLACK_API_URL", "").strip() or DEFAULT_API_URL
    return SlackAdapter(
        engine, settings, token=token, signing_secret=signing_secret,
        app_token=app_token, api_url=api_url,
    )  # fmt: skip
