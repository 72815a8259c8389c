"""The values that cross the store interface, whichever database is behind it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

# The rate limit's sliding window.
WINDOW_SECONDS = 60.0
# How long a platform may redeliver an event: delivery keys are kept this long.
DEDUPE_KEEP_SECONDS = 7 * 24 * 3600

# Report groupings -> SQL expression; the same text works on SQLite and PostgreSQL.
GROUP_COLUMNS = {
    "user": "user_key",
    "channel": "platform || ':' || workspace || ':' || channel",
    "model": "model",
    "day": "day",
    "platform": "platform",
    "kind": "kind",
}


def utc_day(at: float) -> str:
    # Unix time has exactly 86,400 seconds a day, so the day's number names it.
    return _day_name(int(at // 86400))


@lru_cache(maxsize=8)
def _day_name(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86400, UTC).strftime("%Y-%m-%d")


def next_utc_midnight(now: float) -> float:
    return (int(now // 86400) + 1) * 86400.0  # the day utc_day names ends here


@dataclass(frozen=True, slots=True)
class UsageRecord:
    platform: str
    workspace: str
    channel: str
    user_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    tool_calls: int
    cost_usd: float | None
    latency_ms: float
    status: str  # "ok" or a ModelError kind
    created_at: float = 0.0
    kind: str = "chat"  # what the call was for: "chat", "summary"


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """Where a conversation's prompt starts, and what the messages before it said.

    The prompt's history starts after message `starts_after`; `text` summarises the
    messages up to `covers_up_to`. The two differ only while a summary call has failed:
    the next trim then summarises from `covers_up_to` on.
    """

    text: str
    covers_up_to: int
    starts_after: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class UserLimits:
    """Limits for one user; None means "the default from config"."""

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_day_usd: float | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """The store's verdict on one request: admitted, or which limit refused it."""

    refused: str = ""  # "", "blocked", "requests_per_minute", "tokens_per_day", "cost_per_day"
    retry_at: float = 0.0  # when the refused limit frees up (epoch seconds)


@dataclass(slots=True)
class Turn:
    """A claimed message's place in its conversation's queue.

    Replicas answer a conversation's messages one at a time, in the order they took
    turns; a turn is held under a lease its process keeps renewing, so a turn whose
    process died stops blocking the conversation once the lease runs out.
    """

    id: int
    first: bool  # no older live turn in this conversation when it was taken
    ended: bool = False  # the store ended it with the answer
    # An older turn of the conversation had run out of lease when this one was taken:
    # its process died, and its question is to be taken over and answered first.
    behind_stale: bool = False


@dataclass(frozen=True, slots=True)
class StaleTurn:
    """A turn this process took over because its lease ran out: a message that was
    claimed but never answered (its process died, or let go of it at shutdown)."""

    id: int
    platform: str
    conversation: str
    payload: str  # what the adapter stored to answer it later
    created_at: float
    admitted: bool  # the message passed the limits and is in the history already


@dataclass(frozen=True, slots=True)
class Answer:
    """A final answer to store with the call's usage."""

    text: str
    tokens: int


def with_defaults(
    row: tuple[int | None, int | None, float | None, object], defaults: UserLimits
) -> UserLimits:
    """A limits row (rpm, tpd, cost, blocked); NULL means the default."""
    return UserLimits(
        defaults.requests_per_minute if row[0] is None else int(row[0]),
        defaults.tokens_per_day if row[1] is None else int(row[1]),
        defaults.cost_per_day_usd if row[2] is None else float(row[2]),
        bool(row[3]),
    )


def judge(
    limits: UserLimits, recent: tuple[int, float | None], today: tuple[int, float], now: float
) -> Admission:
    """The verdict from what the store counted: (requests this minute up to the limit,
    the oldest of them) and (tokens, cost) today."""
    if limits.blocked:
        return Admission("blocked")
    rpm = limits.requests_per_minute or 0
    count, oldest = recent
    if rpm and count >= rpm and oldest is not None:
        return Admission("requests_per_minute", float(oldest) + WINDOW_SECONDS)
    tokens, cost = today
    next_day = next_utc_midnight(now)
    if limits.tokens_per_day and tokens >= limits.tokens_per_day:
        return Admission("tokens_per_day", next_day)
    if limits.cost_per_day_usd and cost >= limits.cost_per_day_usd:
        return Admission("cost_per_day", next_day)
    return Admission()
