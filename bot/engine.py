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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import bot.access_commands  # noqa: F401  (registers /access)
from bot.access import AccessControl
from bot.attachments import Prepared, prepare
from bot.commands import CommandContext, is_admin, is_command, run_command
from bot.config import Settings
from bot.llm import Completion, ModelClient, ModelError, Usage, estimate_usage
from bot.messages import THINKING, ConversationKey, Message, ReplyEvent, ReplyKind
from bot.metrics import Metrics
from bot.prompting import Prompt, PromptBuilder
from bot.ratelimit import Limiter
from bot.response_cache import CACHED_NOTICE, ResponseCache
from bot.safety import Safety, Screened
from bot.store import Answer, Store, Turn, UsageRecord
from bot.store.records import StaleTurn
from bot.summaries import Summarizer
from bot.summarize import Summaries, SummaryError, is_summary
from bot.tokens import count_message, count_recurring
from bot.tools.registry import Registry, ToolContext
from bot.turns import Recoverer, TurnKeeper
from bot.usage import Prices

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "Your message is empty: tell me what you would like to know."
TOO_LONG = "Your message is {length:,} characters; the limit is {limit:,}. Please shorten it."
EMPTY_ANSWER = "The model returned an empty answer. Please try again."
UNEXPECTED = "Something went wrong on my side; please try again."
ROUNDS_EXHAUSTED = "I stopped after {rounds} rounds of tool calls without a final answer."
# How long a tool's worker thread waits for a history search run on the event loop.
SEARCH_WAIT_SECONDS = 30.0
SORRY = "(Sorry for the delay: I was restarted while answering this.)"
LOST = (
    "Sorry, I was restarted while answering your message from {minutes} and lost the "
    "answer. Please ask again."
)


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
class Accepted:
    """A message claimed for answering: a question with its turn in the conversation,
    or (turn None) a command or a message refused without the model."""

    turn: Turn | None


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
        self.model_calls = asyncio.Semaphore(settings.max_concurrent_calls)
        self.last_model_success = 0.0
        self.metrics = Metrics()
        # Moderation, redaction, spend caps and the audit log (bot/safety.py).
        self.safety = Safety(settings, store, model, self.metrics, clock)
        summarizer = Summarizer(settings, store, model, self.prices, self.metrics,
                                self.model_calls, self.safety, clock)  # fmt: skip
        self.prompts = PromptBuilder(settings, store, summarizer, clock)
        self.answers = ResponseCache(settings, store, clock)
        self.access = AccessControl(store, lambda: self.settings, is_admin, self.metrics)
        self.summaries = Summaries(store, lambda: self.settings, clock)
        self._last_prune = 0.0
        self.turns = TurnKeeper(store, settings, self._answer_stale)

    async def close(self) -> None:
        """Stop keeping turns (the store and model client are closed by their owner)."""
        await self.turns.close()

    def recover_for(self, platform: str, recoverer: Recoverer) -> None:
        """Messages of this platform that a process claimed but never answered (it died,
        or stopped mid-answer) are answered here, through `recoverer`."""
        self.turns.recover_for(platform, recoverer)

    def delivered_here(self, *keys: str) -> bool:
        """A delivery this process has taken already: a second one can be acknowledged
        without parsing it further (False only means the store decides, as usual)."""
        return self.turns.claimed_here(keys)

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

    async def accept(self, message: Message) -> Accepted | None:
        """Claim a message (None: a delivery seen before) and give a question its turn.

        Adapters whose platform waits for an acknowledgement call this first and
        acknowledge after it: the order in which messages of a conversation are
        answered, across replicas, is then the order in which they were acknowledged.
        """
        problem = self._invalid(message)
        if problem or (is_command(message.text) and not is_summary(message.text)):
            # Duplicates first: a redelivered bad message gets one complaint.
            claimed = await self.store.claim_delivery(message.dedupe_keys)
            return Accepted(None) if claimed else None
        turn = await self.turns.begin(message)
        return None if turn is None else Accepted(turn)

    async def handle(
        self, message: Message, accepted: Accepted | None = None
    ) -> AsyncIterator[ReplyEvent]:
        """Answer one message, yielding what the user should see as it happens.
        `accepted`: what accept() returned for it, if the adapter called it already."""
        self.metrics.messages.labels(message.platform).inc()
        timing = Timing()
        work = self._handle(message, accepted, timing)
        async with aclosing(self._guarded(work, message, timing)) as events:
            async for event in events:
                yield event

    async def _guarded(
        self, work: AsyncGenerator[ReplyEvent, None], message: Message, timing: Timing
    ) -> AsyncGenerator[ReplyEvent, None]:
        try:
            async with aclosing(_timed(work, timing.add_active)) as events:
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

    async def _handle(
        self, message: Message, accepted: Accepted | None, timing: Timing
    ) -> AsyncGenerator[ReplyEvent, None]:
        await self._prune_now_and_then()
        accepted = accepted or await self.accept(message)
        if accepted is None:
            log.info("duplicate delivery ignored: %s", message.dedupe_keys)
            return
        if accepted.turn is None:
            if (direct := await self._answer_directly(message, self._invalid(message))) is not None:
                yield direct
            return
        # One message of a conversation at a time, in the order of their turns, in
        # this process and across replicas.
        await self.turns.wait(message.conversation, accepted.turn)
        run = self._run_turn(message, accepted.turn, timing, admitted=False)
        async with aclosing(run) as events:
            async for event in events:
                yield event

    async def _run_turn(
        self, message: Message, turn: Turn, timing: Timing, *, admitted: bool
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Answer a message whose turn it is, and end the turn: with the answer, a
        refusal or an error. A turn abandoned midway (a shutdown, a reply closed early)
        is let go of instead, so that it is answered after all, by whichever process
        recovers it."""
        abandoned = False
        try:
            async with aclosing(self._answer_turn(message, turn, timing, admitted)) as events:
                async for event in events:
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            abandoned = True
            raise
        finally:
            if abandoned and not turn.ended:
                await self.store.release_turn(turn.id, self.turns.owner)
            elif not turn.ended:
                await self.store.end_turn(turn.id, self.turns.owner)
            self.turns.ended(message.conversation)

    async def _answer_stale(self, stale: StaleTurn, recoverer: Recoverer) -> None:
        """Answer a message another process claimed and never answered, once."""
        try:
            message = Message.from_payload(stale.payload)
        except ValueError as error:
            log.error("turn %s cannot be recovered (%s); dropped", stale.id, error)
            await self.store.end_turn(stale.id, self.turns.owner)
            return
        age = self.clock() - stale.created_at
        events: AsyncGenerator[ReplyEvent, None]
        if age > self.settings.recovery_max_age:
            log.warning("%s: a message %.0f s old was never answered", message.conversation, age)
            await self.store.end_turn(stale.id, self.turns.owner)
            events = _one(ReplyEvent(ReplyKind.ERROR, LOST.format(minutes=_ago(age))))
        else:
            log.info("%s: answering a message claimed %.0f s ago", message.conversation, age)
            timing = Timing()
            events = self._guarded(self._recovered(message, stale, timing), message, timing)
        try:
            async with aclosing(events) as answer:
                await recoverer(message, answer)
        except Exception:
            log.exception("%s: delivering a recovered answer failed", message.conversation)
        finally:
            # Not ended (the platform refused it before the answer began): let go of it,
            # to be tried again, rather than hold it, and its conversation, for ever.
            await self.store.release_turn(stale.id, self.turns.owner)

    async def _recovered(
        self, message: Message, stale: StaleTurn, timing: Timing
    ) -> AsyncGenerator[ReplyEvent, None]:
        turn = Turn(stale.id, first=False)
        await self.turns.wait(message.conversation, turn)
        yield ReplyEvent(ReplyKind.NOTICE, SORRY)
        # A /reset since the question was stored left it out of the conversation: it is
        # stored again, after the reset, and answered in the fresh conversation.
        admitted = stale.admitted and await self._in_context(message)
        run = self._run_turn(message, turn, timing, admitted=admitted)
        async with aclosing(run) as events:
            async for event in events:
                yield event

    async def _in_context(self, message: Message) -> bool:
        stored = self.safety.stored_text(message.text)
        window = await self.store.recent(message.conversation, self.settings.history_messages)
        return any(m.role == "user" and m.content == stored for m in window.messages)

    async def _answer_turn(
        self, message: Message, turn: Turn, timing: Timing, admitted: bool
    ) -> AsyncGenerator[ReplyEvent, None]:
        if not admitted:
            # Access lists first: a message Parley does not answer is not moderated,
            # counted or stored.
            verdict = await self.access.check(message)
            if not verdict.allowed:
                if verdict.notice is not None:
                    yield verdict.notice
                return
        screened = await self.safety.screen(message, admitted)
        if screened.refusal is not None:
            yield screened.refusal
            return
        if not admitted:
            files = await self._read_files(message, screened.model)
            refusal = await self._admit(message, turn, files) if files.text else None
            if refusal is not None:
                yield refusal
                return
            if files.note:  # the files it skipped; with nothing left, nothing to answer
                yield ReplyEvent(ReplyKind.NOTICE if files.text else ReplyKind.ERROR, files.note)
            if not files.text:
                return
        # aclosing: a reply closed early must close the generators it runs now, so
        # their finally blocks (the usage row, the turn) run at once.
        async with aclosing(self._answer(message, turn, timing, screened)) as events:
            async for event in events:
                yield event

    async def _answer_directly(self, message: Message, problem: str) -> ReplyEvent | None:
        """The reply to a message the model never sees: a complaint or a command."""
        if problem:
            return ReplyEvent(ReplyKind.ERROR, problem)
        verdict = await self.access.check(message)
        return await run_command(self.commands, message) if verdict.allowed else verdict.notice

    async def _read_files(self, message: Message, fallback_model: str) -> Prepared:
        if not message.attachments:
            return Prepared(message.text)
        model, system_prompt = await self._channel_settings(message)
        model = fallback_model or model  # the budget's, as in _answer
        schemas = self.tools.schemas(self._enabled_tools(message))
        budget = self.settings.context_tokens - self.settings.reply_tokens
        budget -= count_recurring(system_prompt) + self.prompts.schema_tokens(schemas)
        files = await prepare(message.text, message.attachments, model, self.settings, budget)
        for kind, outcome in files.outcomes:
            self.metrics.attachments.labels(kind, outcome).inc()
        return files

    async def _admit(self, message: Message, turn: Turn, files: Prepared) -> ReplyEvent | None:
        """Check the limits and store the message, in one transaction: a refused
        message is not stored, an admitted one is before the model is called.
        Returns the refusal to show, or None."""
        limits = self.limiter.limits_for(is_admin(self.settings, message))
        now = self.clock()
        stored = self.safety.stored_text(files.text)
        verdict = await self.store.admit_message(
            message.conversation, message.user_key, limits, now, stored, files.tokens, turn.id,
            parts=files.parts_json_for(stored),
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
            await self.safety.prune()

    def _invalid(self, message: Message) -> str:
        text = message.text.strip()
        if not text and not message.attachments:
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

    async def _answer(
        self, message: Message, turn: Turn, timing: Timing, screened: Screened
    ) -> AsyncGenerator[ReplyEvent, None]:
        model, system_prompt = await self._channel_settings(message)
        model = screened.model or model  # the budget's fallback model
        summary = is_summary(message.text)  # /summarize: a prompt of its own, no tools
        schemas = [] if summary else self.tools.schemas(self._enabled_tools(message))
        try:
            prompt = (
                Prompt(await self.summaries.prompt(message, system_prompt), notice="")
                if summary
                else await self.prompts.build(message, model, system_prompt, schemas)
            )
        except SummaryError as error:
            yield ReplyEvent(ReplyKind.ERROR, str(error))
            return
        if len(prompt.messages) < 2 or prompt.messages[-1].get("role") != "user":
            yield ReplyEvent(ReplyKind.ERROR, "Your message does not fit in the model's context.")
            return
        if prompt.notice and await self.store.claim_trim_notice(message.conversation):
            yield ReplyEvent(ReplyKind.NOTICE, prompt.notice)
        if screened.notice:
            yield ReplyEvent(ReplyKind.NOTICE, screened.notice)
        # A summary reads what is new each time: never answered from the cache.
        cache_key = (
            "" if summary else self.answers.key(message, model, system_prompt, prompt, schemas)
        )
        asked = len(prompt.messages)
        if (cached := await self.answers.lookup(cache_key)) is not None:
            await self.answers.answer_from_cache(message, model, cached, turn, self.turns.owner)
            self.metrics.cached_answers.inc()
            yield ReplyEvent(ReplyKind.NOTICE, CACHED_NOTICE)
            yield ReplyEvent(ReplyKind.FINAL, cached)
            return
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
                final = self._finish(completion)
                if final.kind is ReplyKind.FINAL and len(prompt.messages) == asked:  # no tools
                    await self.answers.keep(cache_key, message, prompt, final.text)
                yield final
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
                model, self.safety.outgoing(prompt), tools=schemas,
                max_tokens=self.settings.reply_tokens,
                extra_body=self.prompts.extra_body(message.conversation),
                batch_seconds=self.settings.stream_seconds(message.platform),
            )  # fmt: skip
            masker = self.safety.stream_masker()
            try:
                async with aclosing(_timed(stream, timing.add_model)) as items:
                    async for item in items:
                        if not streamed and completion is None:
                            self.metrics.first_token_seconds.observe(time.perf_counter() - started)
                        if isinstance(item, Completion):
                            # The word held back, masked. An answer's last words reach
                            # the user with its FINAL event instead: one closing call on
                            # the platform rather than an edit and then a close.
                            if (rest := masker.flush()) and item.tool_calls:
                                yield ReplyEvent(ReplyKind.DELTA, rest)
                            completion, status = await self.safety.review(message, item), "ok"
                            yield completion
                        else:
                            streamed.append(item.text)
                            if shown := masker.feed(item.text):
                                yield ReplyEvent(ReplyKind.DELTA, shown)
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
                ending = turn.id if answer else None
                await self.store.finish_call(
                    record, message.conversation, answer, ending, self.turns.owner
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
            usage = estimate_usage(prompt, completion)
        if status == "ok":
            self.last_model_success = self.clock()
        elapsed = time.perf_counter() - started
        cost = self.prices.cost(model, usage or Usage())
        self.metrics.count_call(status, usage, cost, elapsed)
        self.safety.spent(message, cost)
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
            self.metrics.count_tool_call(call.name, self.tools.names(), result.error_kind)
            content = self.safety.tool_result(result.content)  # secrets masked
            prompt.append({"role": "tool", "tool_call_id": call.id, "content": content})
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


async def _one(event: ReplyEvent) -> AsyncGenerator[ReplyEvent, None]:
    yield event


def _ago(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} minutes ago" if minutes < 120 else f"{round(minutes / 60)} hours ago"


def _final_answer(completion: Completion | None, status: str) -> Answer | None:
    """A complete final answer to store; never a cut-short one or a tool call."""
    if status != "ok" or completion is None or completion.tool_calls:
        return None
    text = completion.text.strip()
    return Answer(text, count_message(text)) if text else None
