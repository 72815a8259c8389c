"""The conversation engine: Engine.handle(message) -> async iterator of ReplyEvent.

One message goes: validate -> commands -> limits -> store the user's message ->
build the prompt -> call the model (and its tools) -> store the reply and usage,
yielding ReplyEvents as things happen. Messages of one conversation are handled in
order; different conversations run concurrently, with a global cap on model calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.commands import CommandContext, is_admin, is_command, run_command
from bot.config import Settings
from bot.llm import Completion, ModelClient, ModelError, Usage
from bot.locks import KeyedLocks
from bot.messages import ConversationKey, Message, ReplyEvent, ReplyKind
from bot.metrics import Metrics
from bot.ratelimit import Limiter
from bot.store import Answer, Store, StoredMessage, Turn, UsageRecord
from bot.tokens import count_message, count_recurring, count_text, newest_that_fit
from bot.tools.registry import Registry, ToolContext
from bot.usage import Prices

log = logging.getLogger(__name__)

TRIM_NOTICE = "(Only the most recent messages fit in my context; older ones were left out.)"
EMPTY_MESSAGE = "Your message is empty: tell me what you would like to know."
TOO_LONG = "Your message is {length:,} characters; the limit is {limit:,}. Please shorten it."
EMPTY_ANSWER = "The model returned an empty answer. Please try again."
UNEXPECTED = "Something went wrong on my side; please try again."
ROUNDS_EXHAUSTED = "I stopped after {rounds} rounds of tool calls without a final answer."
# How long a tool's worker thread waits for a history search run on the event loop.
SEARCH_WAIT_SECONDS = 30.0
# Text the model may stream before the first delta; adapters show it at once.
THINKING = "thinking…"
# How often a message whose conversation is busy on another replica looks again.
TURN_POLL_SECONDS = 0.02


@dataclass(slots=True)
class Timing:
    """What one message's handling measures about itself.

    Only time spent producing events counts: while an adapter posts an event to its
    platform, the engine is paused and that time is the adapter's.
    """

    active_seconds: float = 0.0
    model_seconds: float = 0.0

    def add_active(self, seconds: float) -> None:
        self.active_seconds += seconds

    def add_model(self, seconds: float) -> None:
        self.model_seconds += seconds


Item = TypeVar("Item")


async def _timed(
    items: AsyncGenerator[Item, None], add: Callable[[float], None]
) -> AsyncGenerator[Item, None]:
    """Yield from items, adding up the time spent producing them (not consuming them)."""
    try:
        while True:
            started = time.perf_counter()
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            finally:
                add(time.perf_counter() - started)
            yield item
    finally:
        # A consumer that stops early must release what items holds (the
        # conversation's lock) now, not whenever the generator is collected.
        await items.aclose()


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, Any]]
    trimmed: bool  # older history was left out and the user was not told yet


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ModelClient,
        *,
        tools: Registry | None = None,
        prices: Prices | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.tools = tools or Registry()
        self.prices = prices or Prices({})
        self.clock = clock
        self.limiter = Limiter(store, settings)
        self.commands = CommandContext(store, settings, clock)
        self.conversation_locks = KeyedLocks[ConversationKey]()
        self.model_calls = asyncio.Semaphore(settings.max_concurrent_calls)
        self.last_model_success = 0.0
        self._schema_token_cache: dict[tuple[str, ...], int] = {}
        self.metrics = Metrics()
        self._last_prune = 0.0
        # Who holds a turn's lease: this process, distinct from every other replica.
        self.owner = uuid.uuid4().hex
        self._renewing: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop renewing leases (the store and model client are closed by their owner)."""
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None

    async def knows_conversation(self, key: ConversationKey) -> bool:
        """True if Parley has taken part in this conversation (thread follow-ups)."""
        return await self.store.has_history(key)

    async def transcript(self, key: ConversationKey, limit: int = 50) -> list[tuple[str, str]]:
        """The newest (role, text) pairs of a conversation since its last reset, for
        adapters that redraw a conversation (the web chat after a reload)."""
        messages = (await self.store.recent(key, limit)).messages
        return [
            (m.role, m.content) for m in messages if m.role in ("user", "assistant") and m.content
        ]

    async def handle(self, message: Message) -> AsyncIterator[ReplyEvent]:
        """Answer one message, yielding what the user should see as it happens."""
        self.metrics.messages.labels(message.platform).inc()
        timing = Timing()
        try:
            async with aclosing(_timed(self._handle(message, timing), timing.add_active)) as events:
                async for event in events:
                    yield event
        except Exception:
            # A fault of Parley's own (a database error, a bug): the user hears of it the
            # same way on every platform, and the adapter goes on to the next message.
            log.exception("answering in %s failed", message.conversation)
            yield ReplyEvent(ReplyKind.ERROR, UNEXPECTED)
        finally:
            engine_time = timing.active_seconds - timing.model_seconds
            self.metrics.engine_seconds.observe(max(0.0, engine_time))

    async def _handle(self, message: Message, timing: Timing) -> AsyncGenerator[ReplyEvent, None]:
        await self._prune_now_and_then()
        problem = self._invalid(message)
        if problem or is_command(message.text):
            # Duplicates first: a redelivered bad message gets one complaint.
            if await self.store.claim_delivery(message.dedupe_keys):
                yield await self._answer_directly(message, problem)
            return
        # In this process, one message of a conversation at a time, in arrival order;
        # across replicas, the turns the store hands out keep the same order.
        async with self.conversation_locks.hold(message.conversation):
            turn = await self._take_turn(message)
            if turn is None:
                log.info("duplicate delivery ignored: %s", message.dedupe_keys)
                return
            try:
                async with aclosing(self._answer_turn(message, turn, timing)) as events:
                    async for event in events:
                        yield event
            finally:
                # Normally ended with the answer; after a refusal, an error or a
                # cancel it is ended here, so the conversation goes on.
                if not turn.ended:
                    await self.store.end_turn(turn.id)

    async def _take_turn(self, message: Message) -> Turn | None:
        """Claim the delivery and wait until older messages of the conversation, on any
        replica, are answered."""
        self._keep_leases()
        turn = await self.store.begin_turn(
            message.dedupe_keys, message.conversation, self.owner,
            self.settings.lease_seconds, "",
        )  # fmt: skip
        if turn is not None and not turn.first:
            # The older turn is another replica's: no event of ours says when it ends.
            while not await self.store.is_first_turn(message.conversation, turn.id):  # noqa: ASYNC110
                await asyncio.sleep(TURN_POLL_SECONDS)
        return turn

    def _keep_leases(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_leases())

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self.store.renew_turns(self.owner, self.settings.lease_seconds)
            except Exception:  # the database may be back at the next renewal
                log.exception("renewing this replica's leases failed")

    async def _answer_turn(
        self, message: Message, turn: Turn, timing: Timing
    ) -> AsyncGenerator[ReplyEvent, None]:
        refusal = await self._admit(message)
        if refusal is not None:
            yield refusal
            return
        # aclosing: a reply closed early must close the generators it runs now, so
        # their finally blocks (the usage row, the turn) run at once.
        async with aclosing(self._answer(message, turn, timing)) as events:
            async for event in events:
                yield event

    async def _answer_directly(self, message: Message, problem: str) -> ReplyEvent:
        """The reply to a message the model never sees: a complaint or a command."""
        if problem:
            return ReplyEvent(ReplyKind.ERROR, problem)
        return await run_command(self.commands, message)

    async def _admit(self, message: Message) -> ReplyEvent | None:
        """Check the limits and store the message, in one transaction: a refused
        message is not stored, an admitted one is before the model is called.
        Returns the refusal to show, or None."""
        limits = self.limiter.limits_for(is_admin(self.settings, message))
        now = self.clock()
        verdict = await self.store.admit_message(
            message.conversation, message.user_key, limits, now, message.text,
            count_message(message.text),
        )  # fmt: skip
        refusal = await self.limiter.refusal(message.user_key, verdict, now)
        if refusal is None:
            return None
        self.metrics.refusals.labels(refusal.kind).inc()
        return ReplyEvent(ReplyKind.ERROR, refusal.text, private=True)

    async def _prune_now_and_then(self) -> None:
        # Delivery keys only matter while a platform may still redeliver (days, not
        # months), admissions for a minute; dropping old ones hourly keeps both small.
        now = self.clock()
        if now - self._last_prune > 3600:
            self._last_prune = now
            await self.store.prune(now)

    def _invalid(self, message: Message) -> str:
        text = message.text.strip()
        if not text:
            return EMPTY_MESSAGE
        if len(text) > self.settings.max_input_chars:
            return TOO_LONG.format(length=len(text), limit=self.settings.max_input_chars)
        return ""

    async def _channel_settings(self, message: Message) -> tuple[str, str]:
        """This channel's model and system prompt, or the configured defaults."""
        own = await self.store.channel_settings(
            message.platform, message.workspace, message.channel
        )
        model = own["model"] or self.settings.model
        return model, own["system_prompt"] or self.settings.system_prompt

    def _enabled_tools(self, message: Message) -> tuple[str, ...] | None:
        return self.settings.tool_channels.get(message.channel_id, self.settings.tools)

    def _schema_tokens(self, schemas: list[dict[str, Any]]) -> int:
        """Tokens the tool definitions take in the prompt, counted once per tool set."""
        if not schemas:
            return 0
        key = tuple(schema["function"]["name"] for schema in schemas)
        if key not in self._schema_token_cache:
            self._schema_token_cache[key] = count_text(json.dumps(schemas))
        return self._schema_token_cache[key]

    async def build_prompt(
        self, key: ConversationKey, system_prompt: str, tools_tokens: int
    ) -> Prompt:
        """The system prompt, then the newest whole history groups that fit the budget."""
        budget = (
            self.settings.context_tokens
            - self.settings.reply_tokens
            - count_recurring(system_prompt)
            - tools_tokens
        )
        window = await self.store.recent(key, self.settings.history_messages)
        history = _drop_unanswered_calls(window.messages)
        fit = newest_that_fit(history, budget)
        kept = _drop_orphans(history[len(history) - fit :])
        messages = [{"role": "system", "content": system_prompt}, *[m.as_chat() for m in kept]]
        trimmed = window.dropped_older or len(kept) < len(window.messages)
        return Prompt(messages, trimmed and not window.trim_noticed)

    async def _answer(
        self, message: Message, turn: Turn, timing: Timing
    ) -> AsyncGenerator[ReplyEvent, None]:
        model, system_prompt = await self._channel_settings(message)
        schemas = self.tools.schemas(self._enabled_tools(message))
        prompt = await self.build_prompt(
            message.conversation, system_prompt, self._schema_tokens(schemas)
        )
        if len(prompt.messages) < 2 or prompt.messages[-1].get("role") != "user":
            yield ReplyEvent(ReplyKind.ERROR, "Your message does not fit in the model's context.")
            return
        if prompt.trimmed and await self.store.claim_trim_notice(message.conversation):
            yield ReplyEvent(ReplyKind.NOTICE, TRIM_NOTICE)
        yield ReplyEvent(ReplyKind.STATUS, THINKING)
        for _ in range(self.settings.max_tool_rounds + 1):
            completion: Completion | None = None
            call = self._call_model(message, model, prompt.messages, schemas, timing, turn)
            async with aclosing(call) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        completion = item
                    else:
                        yield item
            if completion is None:
                return
            if not completion.tool_calls:
                yield self._finish(completion)
                return
            async with aclosing(self._run_tools(message, completion, prompt.messages)) as events:
                async for event in events:
                    yield event
        yield ReplyEvent(
            ReplyKind.ERROR, ROUNDS_EXHAUSTED.format(rounds=self.settings.max_tool_rounds)
        )

    def _finish(self, completion: Completion) -> ReplyEvent:
        """The final answer's event; _call_model has stored the answer already."""
        text = completion.text.strip()
        if not text:
            return ReplyEvent(ReplyKind.ERROR, EMPTY_ANSWER)
        return ReplyEvent(ReplyKind.FINAL, text)

    async def _call_model(
        self,
        message: Message,
        model: str,
        prompt: list[dict[str, Any]],
        schemas: list[dict[str, Any]],
        timing: Timing,
        turn: Turn,
    ) -> AsyncGenerator[ReplyEvent | Completion, None]:
        """One model call: text deltas as ReplyEvents, then the Completion; records
        usage and stores a final answer. A failure ends it with an ERROR ReplyEvent
        and no Completion."""
        completion: Completion | None = None
        # Stays "cancelled" if the call is abandoned (a closed reply, a shutdown).
        status = "cancelled"
        streamed: list[str] = []  # text that reached the user, billed even if cut short
        async with self.model_calls:
            started = time.perf_counter()
            self.metrics.in_flight.inc()
            stream = self.model.stream(
                model, prompt, tools=schemas, max_tokens=self.settings.reply_tokens
            )
            try:
                async with aclosing(_timed(stream, timing.add_model)) as items:
                    async for item in items:
                        if not streamed and completion is None:
                            self.metrics.first_token_seconds.observe(time.perf_counter() - started)
                        if isinstance(item, Completion):
                            completion, status = item, "ok"
                            yield item
                        else:
                            streamed.append(item.text)
                            yield ReplyEvent(ReplyKind.DELTA, item.text)
            except ModelError as error:
                status = error.kind
                log.warning("model call failed for %s: %s", message.conversation, error)
                yield ReplyEvent(ReplyKind.ERROR, error.user_message)
            finally:
                self.metrics.in_flight.dec()
                if completion is None and streamed:
                    completion = Completion(text="".join(streamed))
                # One transaction: the usage row, the final answer and the end of the
                # turn are stored together or not at all.
                record = self._usage_record(message, model, prompt, completion, status, started)
                answer = _final_answer(completion, status)
                await self.store.finish_call(
                    record, message.conversation, answer, turn.id if answer else None
                )
                turn.ended = answer is not None

    def _usage_record(
        self,
        message: Message,
        model: str,
        prompt: list[dict[str, Any]],
        completion: Completion | None,
        status: str,
        started: float,
    ) -> UsageRecord:
        usage = completion.usage if completion else None
        if completion is not None and usage is None:
            # The server sent no usage: count ourselves rather than record nothing.
            usage = _estimate_usage(prompt, completion)
        if status == "ok":
            self.last_model_success = self.clock()
        elapsed = time.perf_counter() - started
        cost = self.prices.cost(model, usage or Usage())
        self._count_call(status, usage, cost, elapsed)
        return UsageRecord(
                message.platform, message.workspace, message.channel, message.user_key, model,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
                usage.cached_tokens if usage else 0,
                len(completion.tool_calls) if completion else 0,
                cost,
                elapsed * 1000,
                status,
                self.clock(),
        )  # fmt: skip

    def _count_call(
        self, status: str, usage: Usage | None, cost: float | None, elapsed: float
    ) -> None:
        metrics = self.metrics
        metrics.model_calls.labels(status).inc()
        metrics.model_seconds.observe(elapsed)
        if usage:
            metrics.prompt_tokens.inc(usage.prompt_tokens)
            metrics.completion_tokens.inc(usage.completion_tokens)
            metrics.cached_tokens.inc(usage.cached_tokens)
        if cost:
            metrics.cost.inc(cost)

    async def _run_tools(
        self, message: Message, completion: Completion, prompt: list[dict[str, Any]]
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Run every tool call (parallel ones concurrently) and extend the prompt."""
        names = ", ".join(sorted({call.name for call in completion.tool_calls}))
        yield ReplyEvent(ReplyKind.STATUS, f"running {names}…")
        context = self._tool_context(message)
        timeout = self.settings.tool_timeout_seconds
        enabled = self._enabled_tools(message)
        results = await asyncio.gather(
            *(
                self.tools.run(c.name, c.arguments, context, timeout=timeout, enabled=enabled)
                for c in completion.tool_calls
            )
        )
        calls = [call.as_chat() for call in completion.tool_calls]
        prompt.append({"role": "assistant", "content": completion.text, "tool_calls": calls})
        for call, result in zip(completion.tool_calls, results, strict=True):
            self.metrics.tool_calls.labels(call.name, result.error_kind or "ok").inc()
            prompt.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
        await self._store_tool_round(message.conversation, prompt[-1 - len(calls) :])

    async def _store_tool_round(self, key: ConversationKey, round_: list[dict[str, Any]]) -> None:
        """Store a tool call and all its results at once: a call stored without its
        results (a crash or cancel in between) would make the API reject every later
        prompt of the conversation."""
        call, *results = round_
        tokens = count_message(call["content"] + json.dumps(call["tool_calls"]))
        await self.store.append_tool_round(
            key,
            (call["content"], tokens, call["tool_calls"]),
            [(r["content"], count_message(r["content"]), r["tool_call_id"]) for r in results],
        )

    def _tool_context(self, message: Message) -> ToolContext:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        async def search_here(query: str, limit: int) -> list[dict[str, Any]]:
            # Bound to this message's channel: a tool can never reach another one.
            return await self.store.search_channel(
                message.platform, message.workspace, message.channel, query, limit
            )

        def search_from_thread(query: str, limit: int) -> list[dict[str, Any]]:
            if threading.get_ident() == loop_thread:
                raise RuntimeError("on the event loop, await context.search_history")
            # A sync plugin tool runs in a worker thread. The store belongs to the loop:
            # a transaction opened here would interleave with the loop's own (a
            # rollback of one undoing the other's writes), so the search runs there.
            found = asyncio.run_coroutine_threadsafe(search_here(query, limit), loop)
            return found.result(SEARCH_WAIT_SECONDS)

        return ToolContext(message.conversation, message.user_key, search_here, search_from_thread)


def _final_answer(completion: Completion | None, status: str) -> Answer | None:
    """A complete final answer to store; never a cut-short one or a tool call."""
    if status != "ok" or completion is None or completion.tool_calls:
        return None
    text = completion.text.strip()
    return Answer(text, count_message(text)) if text else None


def _drop_unanswered_calls(messages: list[StoredMessage]) -> list[StoredMessage]:
    """Leave out tool calls that lack a result (history written before calls and
    results were stored together); the API rejects them."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    broken = {
        m.group_id
        for m in messages
        if m.tool_calls and any(call.get("id") not in answered for call in m.tool_calls)
    }
    return [m for m in messages if m.group_id not in broken] if broken else messages


def _drop_orphans(messages: list[StoredMessage]) -> list[StoredMessage]:
    """Start the history at a user message.

    A tool result whose call was cut off is rejected by the API, and the chat
    templates of many local models (Mistral's, for one) require user first.
    """
    start = 0
    while start < len(messages) and messages[start].role != "user":
        start += 1
    return messages[start:]


def _estimate_usage(prompt: list[dict[str, Any]], completion: Completion) -> Usage:
    prompt_tokens = sum(count_message(str(m.get("content") or "")) for m in prompt)
    return Usage(prompt_tokens, count_text(completion.text))
