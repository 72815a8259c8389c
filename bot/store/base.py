"""The store interface: everything the engine, limits, commands, reports and the
dashboard need from a database, with SQLite and PostgreSQL behind it.

Every call is async: a PostgreSQL round trip or a wait for SQLite's write lock must
never hold up the event loop. Each call is one transaction, so what must happen
together (claiming a delivery and taking a turn; admitting a request and storing it;
an answer and its usage) is one call, exact across processes.
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.history import StoredMessage, Window
from bot.messages import ConversationKey
from bot.store.audit_rows import AUDIT_PAGE, AuditEntry
from bot.store.records import (
    Admission,
    Answer,
    ConversationSummary,
    StaleTurn,
    Turn,
    UsageRecord,
    UserLimits,
)

# A tool call round as the store keeps it: the call (content, tokens, tool_calls) and
# each result (content, tokens, tool_call_id).
ToolCall = tuple[str, int, list[dict[str, Any]]]
ToolResult = tuple[str, int, str]


class Store(Protocol):
    kind: str  # "sqlite" or "postgresql"
    description: str  # where the data lives, safe to log (never a password)

    async def close(self) -> None: ...
    async def writable(self) -> bool:
        """True if a write reaches the disk right now (health checks)."""
        ...

    # -- deliveries and turns --------------------------------------------------------

    async def claim_delivery(self, keys: tuple[str, ...]) -> bool:
        """Record delivery keys; False if any was seen before (answer exactly once)."""
        ...

    async def begin_turn(
        self,
        keys: tuple[str, ...],
        conversation: ConversationKey,
        owner: str,
        lease_seconds: float,
        payload: str,
    ) -> Turn | None:
        """Claim the delivery and queue a turn in the conversation, at once; None for a
        delivery seen before."""
        ...

    async def is_first_turn(self, conversation: ConversationKey, turn_id: int) -> bool:
        """True when no older turn of the conversation is still live."""
        ...

    async def renew_turns(self, owner: str, lease_seconds: float) -> None:
        """Extend the lease of every live turn this process holds."""
        ...

    async def end_turn(self, turn_id: int, owner: str) -> None:
        """End a turn `owner` still holds (one taken over by another process is not
        ended under it)."""
        ...

    async def release_turn(self, turn_id: int, owner: str) -> None:
        """Let go of a turn `owner` still holds and could not finish (a shutdown): it is
        answered by the next process to look for stale turns."""
        ...

    async def claim_stale_turns(
        self, owner: str, lease_seconds: float, platforms: tuple[str, ...], limit: int
    ) -> list[StaleTurn]:
        """Take over (oldest first) turns of these platforms whose lease ran out."""
        ...

    async def admit_message(
        self,
        conversation: ConversationKey,
        user_key: str,
        limits: UserLimits | None,
        now: float,
        text: str,
        tokens: int,
        turn_id: int | None = None,
        *,
        parts: str = "",
    ) -> Admission:
        """Check the user's limits (None: exempt) and, if admitted, store the message
        (with its content parts as JSON when it has images) and mark its turn admitted."""
        ...

    async def finish_call(
        self,
        record: UsageRecord,
        conversation: ConversationKey,
        answer: Answer | None,
        turn_id: int | None,
        owner: str,
    ) -> None:
        """Record a model call's usage, store its final answer if any, and end the turn
        if given: one transaction. The answer is stored and the turn ended only while
        `owner` holds the turn: a process that stalled past its lease, whose turn
        another process took over, does not store a second answer."""
        ...

    async def append_tool_round(
        self, conversation: ConversationKey, call: ToolCall, results: list[ToolResult]
    ) -> None:
        """A tool call and all its results, together or not at all."""
        ...

    # -- history -----------------------------------------------------------------------

    async def append(
        self,
        conversation: ConversationKey,
        role: str,
        content: str,
        tokens: int,
        *,
        user: str = "",
    ) -> int: ...
    async def recent(self, conversation: ConversationKey, max_messages: int) -> Window:
        """Up to `max_messages` newest messages since the last reset, oldest first."""
        ...

    async def has_history(self, conversation: ConversationKey) -> bool: ...
    async def count_messages(self, conversation: ConversationKey) -> int: ...
    async def reset(self, conversation: ConversationKey) -> None:
        """Start afresh: stored messages stay but leave the context; the summary is
        cleared, its marks moved to the reset."""
        ...

    async def forget_channel(self, platform: str, workspace: str, channel: str) -> int:
        """Delete every stored message of a channel, all its threads included, with
        their summaries and cached answers."""
        ...

    async def claim_trim_notice(self, conversation: ConversationKey) -> bool:
        """True the first time older messages are dropped since the last reset."""
        ...

    async def search_channel(
        self, platform: str, workspace: str, channel: str, query: str, limit: int
    ) -> list[dict[str, Any]]:
        """Full-text search over one channel's messages (all its threads), best first."""
        ...

    # -- summaries and cached answers (bot/summaries.py, bot/prompting.py) ------------

    async def summary(self, conversation: ConversationKey) -> ConversationSummary | None:
        """Where the conversation's prompt starts and the summary of what came before;
        None until its first trim (or after a reset)."""
        ...

    async def save_summary(
        self,
        conversation: ConversationKey,
        summary: ConversationSummary,
        replacing: int | None = None,
    ) -> None:
        """replacing: the starts_after of the summary read before this one was made (0:
        none); then nothing is saved if the conversation was reset (its mark moved) or
        forgotten (its messages deleted) meanwhile: commands do not wait for a turn."""
        ...

    async def history_between(
        self, conversation: ConversationKey, after_id: int, up_to_id: int, limit: int
    ) -> list[StoredMessage]:
        """The newest `limit` messages with after_id < id <= up_to_id, oldest first."""
        ...

    async def cached_answer(self, key: str, now: float) -> str | None:
        """A stored answer to an identical single-turn question, if not expired."""
        ...

    async def save_answer(self, key: str, channel: str, text: str, expires_at: float) -> None:
        """Keep an answer for identical questions; `channel` lets /forget delete it."""
        ...

    # -- channel settings -------------------------------------------------------------

    async def channel_settings(self, platform: str, workspace: str, channel: str) -> dict[str, str]:
        """This channel's own system_prompt and model ("" where it has none)."""
        ...

    async def set_channel_setting(
        self, platform: str, workspace: str, channel: str, name: str, value: str
    ) -> None: ...

    # -- limits and usage --------------------------------------------------------------

    async def admit(self, user_key: str, defaults: UserLimits, now: float) -> Admission:
        """Decide one request in one transaction, exact across processes."""
        ...

    async def record_usage(self, record: UsageRecord) -> None: ...
    async def today(self, user_key: str, now: float) -> tuple[int, float]: ...
    async def user_limits(self, user_key: str, defaults: UserLimits) -> UserLimits: ...
    async def overridden_limits(self, defaults: UserLimits) -> list[tuple[str, UserLimits]]:
        """Every user with limits of their own, by key, the defaults filled in."""
        ...

    async def set_user_limit(self, user_key: str, name: str, value: float | None) -> None: ...
    async def usage_report(self, since: float, by: str, limit: int = 0) -> list[dict[str, Any]]:
        """Usage per group since a time, biggest token users first."""
        ...

    async def refusal_counts(self, since: float) -> dict[str, int]: ...

    # -- access lists (bot/access.py) ----------------------------------------------------

    async def access_entries(self) -> list[tuple[str, str, str]]:
        """Every (list, kind, target) admins added: ("block", "user", "slack:U1")."""
        ...

    async def access_version(self) -> tuple[int, float]:
        """(entries, newest change): changes whenever an entry is added, moved or
        removed, so a process re-reads the entries only then."""
        ...

    async def set_access(self, list_name: str, kind: str, target: str) -> None:
        """Put a target on the allow or block list (moving it off the other)."""
        ...

    async def remove_access(self, kind: str, target: str) -> bool:
        """False if the target was on no list in the database."""
        ...

    async def claim_access_notice(self, key: str) -> bool:
        """True the first time, across processes: say why Parley stays quiet once."""
        ...
    async def prune(self, now: float) -> None:
        """Drop delivery keys past redelivery, admissions past the rate window and
        expired cached answers."""
        ...

    # -- audit log, budget alerts and spend (bot/audit.py, bot/budget.py) -------------

    async def add_audit(self, entry: AuditEntry) -> None: ...
    async def audit_entries(
        self, since: float, user: str = "", action: str = "", limit: int = AUDIT_PAGE
    ) -> list[AuditEntry]:
        """Newest first; user matches the actor or the target, action a name or prefix."""
        ...

    async def prune_audit(self, before: float) -> int:
        """Delete audit rows older than `before` (only audit.retain_days asks this)."""
        ...

    async def claim_alert(self, key: str, at: float) -> bool:
        """True for the first claim of a key, across every replica."""
        ...

    async def record_refusal(self, user_key: str, kind: str, at: float) -> None: ...
    async def spend_since(self, since: float, platform: str = "", workspace: str = "") -> float:
        """Dollars spent since a time: everywhere, or in one platform's workspace."""
        ...

    async def user_usage(self, user_key: str, since: float) -> list[dict[str, Any]]:
        """One user's usage since a time, per model (the report's columns)."""
        ...

    async def channel_moderation(self, platform: str, workspace: str, channel: str) -> str:
        """An admin's moderation override for a channel: "off", or "" for none."""
        ...


LIMIT_COLUMNS = ("requests_per_minute", "tokens_per_day", "cost_per_day_usd", "blocked")
SETTING_COLUMNS = ("system_prompt", "model", "moderation")
