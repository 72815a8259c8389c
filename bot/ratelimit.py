"""Per-user limits: which apply to whom, and what a refused user is told.

The counting itself is one transaction in the store (Store.admit_message), so it is
exact under concurrency and across processes and replicas sharing the database. Token and cost
limits use the usage the API reported after each call: a call already in flight when
the limit is reached may overshoot it by at most that call's tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.config import Settings
from bot.store import Admission, Store, UserLimits

REFUSALS = {
    "blocked": "You are blocked from using Parley here. Ask an admin if this is a mistake.",
    "requests_per_minute": "You have reached your limit of {rpm} requests per minute. "
    "Try again in {wait}.",
    "tokens_per_day": "You have used your {tpd} tokens for today. Try again in {wait} "
    "(limits reset at 00:00 UTC).",
    "cost_per_day": "You have reached your daily spending limit of ${cost:.2f}. "
    "Try again in {wait} (limits reset at 00:00 UTC).",
}


LIMIT_NAMES = {
    "rpm": "requests_per_minute",
    "requests_per_minute": "requests_per_minute",
    "tpd": "tokens_per_day",
    "tokens_per_day": "tokens_per_day",
    "cost": "cost_per_day_usd",
    "cost_per_day_usd": "cost_per_day_usd",
}


# SQLite integers stop at 2**63; no sensible limit comes near this.
MAX_LIMIT = 10**15


def default_limits(settings: Settings) -> UserLimits:
    """Every user's limits unless an admin set their own."""
    return UserLimits(
        settings.requests_per_minute, settings.tokens_per_day, settings.cost_per_day_usd
    )


def parse_limit(name: str, text: str) -> tuple[str, float | None]:
    """('rpm', '5') -> ('requests_per_minute', 5); 'default' -> None (the default).

    Raises ValueError with a message for the user."""
    column = LIMIT_NAMES.get(name.lower())
    if column is None:
        raise ValueError(f"Unknown limit {name!r}: use rpm, tpd or cost.")
    if text.lower() == "default":
        return column, None
    try:
        number = float(text) if column == "cost_per_day_usd" else int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (or 'default').") from None
    if number < 0:
        raise ValueError("Limits cannot be negative; 0 means unlimited.")
    if number > MAX_LIMIT:
        raise ValueError(f"{text} is more than any limit needs; 0 means unlimited.")
    return column, number


def describe_wait(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str
    text: str


class Limiter:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.defaults = default_limits(settings)

    def limits_for(self, is_admin: bool) -> UserLimits | None:
        """The default limits the store checks this user against; None: exempt."""
        return None if is_admin and self.settings.admins_exempt else self.defaults

    async def check(self, user_key: str, is_admin: bool, now: float) -> Refusal | None:
        """Admit one request now, or say which limit refuses it and until when."""
        limits = self.limits_for(is_admin)
        if limits is None:
            return None
        verdict = await self.store.admit(user_key, limits, now)
        return await self.refusal(user_key, verdict, now)

    async def refusal(self, user_key: str, verdict: Admission, now: float) -> Refusal | None:
        """What to tell a user the store refused; None when admitted."""
        if not verdict.refused:
            return None
        return Refusal(verdict.refused, await self._explain(user_key, verdict, now))

    async def _explain(self, user_key: str, verdict: Admission, now: float) -> str:
        limits = await self.store.user_limits(user_key, self.defaults)
        return REFUSALS[verdict.refused].format(
            rpm=limits.requests_per_minute,
            tpd=limits.tokens_per_day,
            cost=limits.cost_per_day_usd or 0.0,
            wait=describe_wait(verdict.retry_at - now),
        )
