"""Rolling summaries: what a trim drops from a conversation's prompt is summarised.

The summary is made only when a trim happens, extending the previous one, by
`summary.model` (default the channel's model) within `summary.max_tokens`; the call is
billed and recorded as a usage row of kind "summary". A failed call never blocks the
answer: the turn goes on without it and the next trim tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.commands import CommandContext, command
from bot.config import Settings
from bot.history import StoredMessage
from bot.llm import Completion, ModelClient, ModelError, Usage, estimate_usage
from bot.messages import Message
from bot.metrics import Metrics
from bot.store import Store, UsageRecord
from bot.tokens import count_message, count_text, cut_to_tokens
from bot.usage import Prices

if TYPE_CHECKING:
    from bot.safety import Safety

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You keep the running summary of a team chat conversation for an assistant that no "
    "longer sees its older messages. Merge the summary so far with the messages below "
    "into one new summary: who said what, decisions, facts, numbers, names, open "
    "questions and promises. Plain sentences, no preamble, at most {words} words."
)
# Each message is cut to this many characters in the summary's input (tool results
# can be large; their gist is enough).
MESSAGE_CHARS = 2000
NO_SUMMARY = "No summary yet: this conversation has not outgrown my context."
SUMMARY_OFF = "Summaries are turned off (summary.enabled = false)."


class Summarizer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ModelClient,
        prices: Prices,
        metrics: Metrics,
        model_calls: asyncio.Semaphore,
        safety: Safety,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.prices = prices
        self.metrics = metrics
        self.model_calls = model_calls
        self.safety = safety  # redaction of what is sent, spend caps
        self.clock = clock

    async def extend(
        self, message: Message, chat_model: str, previous: str, dropped: list[StoredMessage]
    ) -> str | None:
        """The previous summary extended with the dropped messages; None if the call
        failed (logged and recorded; the caller goes on without it)."""
        if not dropped:
            return previous
        model = self.settings.summary_model or chat_model
        words = max(50, self.settings.summary_tokens * 3 // 4)
        instructions = INSTRUCTIONS.format(words=words)
        # The input fits the context beside the summary: after failed calls the dropped
        # messages pile up, and a prompt past the context would fail for ever.
        fits = self.settings.context_tokens - self.settings.summary_tokens
        fits -= count_message(instructions) + count_message("")
        prompt = [
            {"role": "system", "content": instructions},
            {"role": "user", "content": _input(previous, dropped, fits)},
        ]
        completion: Completion | None = None
        status = "ok"
        started = time.perf_counter()
        try:
            async with self.model_calls:
                stream = self.model.stream(
                    model, self.safety.outgoing(prompt), max_tokens=self.settings.summary_tokens
                )
                async for item in stream:
                    if isinstance(item, Completion):
                        completion = item
        except ModelError as error:
            status = error.kind
            log.warning("summary for %s failed: %s", message.conversation, error)
        usage = Usage()
        if completion is not None:  # a server that sent no usage: count it ourselves
            usage = completion.usage or estimate_usage(prompt, completion)
        await self._record(message, model, usage, status, started)
        text = self.safety.masked(completion.text).strip() if completion else ""
        # Its budget holds even if the provider ignored max_tokens: the summary sits in
        # every later prompt, and an oversized one would leave no room for a question.
        return cut_to_tokens(text, self.settings.summary_tokens).strip() or None

    async def _record(
        self, message: Message, model: str, usage: Usage, status: str, started: float
    ) -> None:
        cost = self.prices.cost(model, usage)
        self.metrics.count_call(status, usage, cost, time.perf_counter() - started)
        self.safety.spent(message, cost)
        record = UsageRecord(
            message.platform, message.workspace, message.channel, message.user_key, model,
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, 0, cost,
            (time.perf_counter() - started) * 1000, status, self.clock(), kind="summary",
        )  # fmt: skip
        await self.store.record_usage(record)


def _input(previous: str, dropped: list[StoredMessage], tokens: int) -> str:
    """The summary so far and the dropped messages, within `tokens`: the newest
    messages that fit (the oldest are left out when they do not)."""
    head = f"Summary so far:\n{previous or '(none yet)'}\n\nMessages to add:"
    left = tokens - count_text(head)
    lines: list[str] = []
    for m in reversed(dropped):
        line = _line(m)
        left -= count_text(line) + 1  # and its newline
        if left < 0:
            break
        lines.append(line)
    return "\n".join([head, *reversed(lines)])


def _line(m: StoredMessage) -> str:
    who = m.user or m.role
    if m.role == "tool":
        who = "tool result"
    elif m.tool_calls:
        names = ", ".join(call.get("function", {}).get("name", "?") for call in m.tool_calls)
        who = f"assistant (called {names})"
    return f"{who}: {m.content[:MESSAGE_CHARS]}"


@command("summary", admin=False)
async def _summary(context: CommandContext, message: Message, arguments: list[str]) -> str:
    """/summary: what this conversation's rolling summary keeps of its older messages."""
    if not context.settings.summary_enabled:
        return SUMMARY_OFF
    state = await context.store.summary(message.conversation)
    if state is None or not state.text:
        return NO_SUMMARY
    return "What I keep of the earlier conversation:\n" + state.text
