"""Prompts that stay cache-friendly as a conversation grows.

Consecutive turns of one conversation share the longest possible prefix: the system
prompt (with the rolling summary right after it), the tool definitions in their fixed
order, then the history, append-only between trims. Nothing that changes per turn
comes before the history. A provider's prompt cache (OpenAI bills cached input at a
fraction of the price; vLLM and llama.cpp answer sooner from a cached prefix) then
covers almost all of each prompt.

When the history no longer fits, the oldest groups (a tool call with its results
together) are dropped in one step, down to `context.trim_to` of the room: the next many
turns share a prefix again. Dropping one message per turn, as before, changed the start
of every prompt, so the cache missed exactly when prompts were largest
(bench/long_conversation.py measures both).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bot.config import Settings
from bot.history import StoredMessage, Window
from bot.messages import ConversationKey, Message
from bot.store import ConversationSummary, Store
from bot.summaries import Summarizer
from bot.tokens import count_recurring, count_text
from bot.vision import sees_images

TRIM_NOTICE = "(Only the most recent messages fit in my context; older ones were left out.)"
SUMMARY_NOTICE = (
    "(Older messages no longer fit in my context; I keep a summary of them: /summary shows it.)"
)
SUMMARY_HEADING = "\n\nSummary of the earlier conversation (older messages are not shown):\n"
# Messages a summary reads at most in one trim (the newest of those dropped).
SUMMARY_INPUT_MESSAGES = 200


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, Any]]
    notice: str  # "": nothing to tell; else older history left out and the user not told yet
    first: bool = False  # the question is all of its conversation (since any reset)


def cache_key(conversation: ConversationKey) -> str:
    """A conversation's prompt_cache_key: stable, and revealing nothing of its ids."""
    return "parley-" + hashlib.sha256(str(conversation).encode()).hexdigest()[:32]


class PromptBuilder:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        summarizer: Summarizer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.summarizer = summarizer
        self.clock = clock
        self._schema_tokens: dict[tuple[str, ...], int] = {}

    def extra_body(self, conversation: ConversationKey) -> dict[str, Any] | None:
        """What the request carries beside the prompt: the cache key, if enabled."""
        if not self.settings.prompt_cache_key:
            return None
        return {"prompt_cache_key": cache_key(conversation)}

    def schema_tokens(self, schemas: list[dict[str, Any]]) -> int:
        """Tokens the tool definitions take in the prompt, counted once per tool set."""
        if not schemas:
            return 0
        key = tuple(schema["function"]["name"] for schema in schemas)
        if key not in self._schema_tokens:
            self._schema_tokens[key] = count_text(json.dumps(schemas))
        return self._schema_tokens[key]

    async def build(
        self, message: Message, model: str, system_prompt: str, schemas: list[dict[str, Any]]
    ) -> Prompt:
        """The system prompt and summary, then the history since the last trim; trims
        first if that history no longer fits."""
        key = message.conversation
        state = await self.store.summary(key) or ConversationSummary("", 0, 0, 0.0)
        if not self.settings.summary_enabled:  # off: one kept from before is not sent
            state = replace(state, text="")
        window = await self.store.recent(key, self.settings.history_messages)
        first = len(window.messages) == 1 and not window.dropped_older
        room = self.settings.context_tokens - self.settings.reply_tokens
        fixed = self.schema_tokens(schemas) + count_recurring(_system(system_prompt, state.text))
        history = drop_unanswered_calls(window.messages)
        if state.starts_after:  # 0 until the first trim: every message is after it
            history = [m for m in history if m.id > state.starts_after]
        # A message that alone could never fit (its question is refused) must not make a
        # trim drop, and summarise, all the rest: its turn is left out instead.
        history = drop_oversized_groups(history, room - fixed)
        # The window is full of messages after the mark: older ones are out of sight.
        crowded = window.dropped_older and all(m.id > state.starts_after for m in window.messages)
        if crowded or fixed + _tokens(history) > room:
            history, state = await self._trim(message, model, history, state, fixed, crowded)
        history = start_at_user(history)
        system = _system(system_prompt, state.text)
        if self.schema_tokens(schemas) + count_recurring(system) + _tokens(history) > room:
            history = []  # the question alone does not fit: the engine says so
        images = sees_images(model, self.settings.vision)  # else images go by their names
        messages = [{"role": "system", "content": system}, *_chat_forms(window, history, images)]
        # Left out by a trim: older than the window, or in it but before the trim's mark.
        # (A /reset puts the mark at the reset too; what came before it is out by the
        # user's choice, and the window holds nothing before it.)
        oldest = window.messages[0].id if window.messages else 0
        left_out = window.dropped_older or 0 < oldest <= state.starts_after
        notice = ""
        if left_out and not window.trim_noticed:
            notice = SUMMARY_NOTICE if state.text else TRIM_NOTICE
        return Prompt(messages, notice, first)

    async def _trim(
        self,
        message: Message,
        model: str,
        history: list[StoredMessage],
        state: ConversationSummary,
        fixed: int,
        crowded: bool,
    ) -> tuple[list[StoredMessage], ConversationSummary]:
        """Drop the oldest groups down to trim_to of the room; summarise what went."""
        settings = self.settings
        target = settings.trim_to * (settings.context_tokens - settings.reply_tokens)
        most = int(settings.trim_to * settings.history_messages) if crowded else len(history)
        kept = drop_oldest_groups(history, max(0, int(target) - fixed), max(1, most))
        dropped_up_to = max((m.id for m in history[: len(history) - len(kept)]), default=0)
        if crowded and history:
            dropped_up_to = max(dropped_up_to, history[0].id - 1)
        if dropped_up_to <= state.starts_after:
            return kept, state
        text, covers = state.text, state.covers_up_to
        if settings.summary_enabled:
            dropped = await self.store.history_between(
                message.conversation, covers, dropped_up_to, SUMMARY_INPUT_MESSAGES
            )
            extended = await self.summarizer.extend(message, model, text, dropped)
            if extended is not None:  # a failed call is tried again at the next trim
                text, covers = extended, dropped_up_to
        replacing = state.starts_after  # not saved if a /reset or /forget came meanwhile
        state = ConversationSummary(text, covers, dropped_up_to, self.clock())
        await self.store.save_summary(message.conversation, state, replacing)
        return kept, state


def _chat_forms(window: Window, history: list[StoredMessage], images: bool) -> list[dict[str, Any]]:
    """The history as the API takes it: the store's copy when it holds one and the
    history is the window's newest messages as they are (the usual case), else built.
    (A store holds none for a window with images, the only messages whose form
    depends on `images`.)"""
    held = window.chats
    if held is not None and history:
        start = len(window.messages) - len(history)
        if start >= 0 and window.messages[start:] == history:
            return held[start:]
    return [m.as_chat(images) for m in history]


def _tokens(messages: list[StoredMessage]) -> int:
    return sum(m.tokens for m in messages)


def _system(system_prompt: str, summary: str) -> str:
    return system_prompt + SUMMARY_HEADING + summary if summary else system_prompt


def drop_oldest_groups(
    history: list[StoredMessage], budget: int, max_messages: int
) -> list[StoredMessage]:
    """The history without its oldest whole groups, down to `budget` tokens and
    `max_messages` messages, starting at a user message; the newest group stays."""
    total = sum(m.tokens for m in history)
    start = 0
    while start < len(history) and (total > budget or len(history) - start > max_messages):
        group = history[start].group_id
        end = start
        while end < len(history) and history[end].group_id == group:
            end += 1
        if end == len(history):
            break  # never the newest group: it holds the question being answered
        total -= sum(m.tokens for m in history[start:end])
        start = end
    return start_at_user(history[start:])


def drop_oversized_groups(history: list[StoredMessage], room: int) -> list[StoredMessage]:
    """The history without the groups (turns) holding a message larger than `room`."""
    oversized = {m.group_id for m in history if m.tokens > room}
    return [m for m in history if m.group_id not in oversized] if oversized else history


def drop_unanswered_calls(messages: list[StoredMessage]) -> list[StoredMessage]:
    """Leave out tool calls that lack a result (history written before calls and
    results were stored together); the API rejects them."""
    if not any(m.tool_calls for m in messages):  # the usual case: one pass, not two
        return messages
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    broken = {
        m.group_id
        for m in messages
        if m.tool_calls and any(call.get("id") not in answered for call in m.tool_calls)
    }
    return [m for m in messages if m.group_id not in broken] if broken else messages


def start_at_user(messages: list[StoredMessage]) -> list[StoredMessage]:
    """Start the history at a user message.

    A tool result whose call was cut off is rejected by the API, and the chat
    templates of many local models (Mistral's, for one) require user first.
    """
    start = 0
    while start < len(messages) and messages[start].role != "user":
        start += 1
    return messages[start:]
