"""The optional response cache (response_cache.ttl_seconds; off by default).

A single-turn question (Discord's /ask, or the first message of its conversation: a
mention that starts a Slack thread, the first line after /reset) asked
again, word for word, in the same channel with the same model, system prompt and tool
set within the TTL is answered from the store: no model call, a usage row of kind
"cached" with zero tokens, and a note that the answer is a cached one. Answers that
used tools are never kept: a tool's result may change from one minute to the next.
An answer whose prompt held history is kept for its own conversation only (and dropped
by /reset): it may repeat what that history said.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.messages import ConversationKey, Message
from bot.prompting import Prompt
from bot.store import Answer, Store, Turn, UsageRecord
from bot.tokens import count_message

CACHED_NOTICE = "(A cached answer: the same question was asked here a short while ago.)"


class ResponseCache:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.clock = clock

    def key(
        self,
        message: Message,
        model: str,
        system_prompt: str,
        prompt: Prompt,
        schemas: list[dict[str, Any]],
    ) -> str:
        """The cache key of a single-turn question; "" when the cache is off or the
        question is part of a longer conversation."""
        if not self.settings.response_cache_seconds:
            return ""
        if not (message.single_turn or prompt.first) or message.attachments:
            return ""  # (files shape the answer too, and are not in the key)
        shaping = [_scope(message, prompt), model, system_prompt, schemas, message.text.strip()]
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()

    async def lookup(self, key: str) -> str | None:
        return await self.store.cached_answer(key, self.clock()) if key else None

    async def answer_from_cache(
        self, message: Message, model: str, text: str, turn: Turn, owner: str
    ) -> None:
        """Store a cached answer as the turn's answer (`owner` holding the turn): a
        request with zero tokens."""
        record = UsageRecord(
            message.platform, message.workspace, message.channel, message.user_key, model,
            0, 0, 0, 0, 0.0, 0.0, "ok", self.clock(), kind="cached",
        )  # fmt: skip
        answer = Answer(text, count_message(text))
        await self.store.finish_call(record, message.conversation, answer, turn.id, owner)
        turn.ended = True

    async def keep(self, key: str, message: Message, prompt: Prompt, text: str) -> None:
        if not key:
            return
        # A /reset or /forget may have run while the model answered (commands do not
        # wait for a turn): the question is gone then, and its answer must not return.
        newest = (await self.store.recent(message.conversation, 2)).messages
        if [m.role for m in newest] != ["user", "assistant"]:
            return
        expires = self.clock() + self.settings.response_cache_seconds
        await self.store.save_answer(key, _scope(message, prompt), text, expires)


def _scope(message: Message, prompt: Prompt) -> str:
    """Where a cached answer may be given again, named as the store names conversations
    (/forget drops a channel's by prefix, /reset a conversation's by name). A question
    with no history before it: its channel. A single-turn question within a conversation
    (Discord's /ask carries the channel's or thread's history): that conversation only,
    so an answer drawn from one conversation's history never reaches another."""
    if prompt.first:
        return str(ConversationKey(message.platform, message.workspace, message.channel, ""))
    return str(message.conversation)
