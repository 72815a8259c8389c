"""Spend caps ([budget]): a daily and a monthly cap in dollars for the whole bot and
per workspace, on top of the per-user limits.

Before each request the spend of every cap that applies is compared with it. Crossing
warn_at (80% by default) or the cap itself alerts every admin once per period: the
alert's key is claimed in the store, so replicas agree on who sends it. At a cap a
request is refused, or answered by budget.fallback_model with a short note.

Spend is summed from the usage table, then kept up to date in memory with the cost
of this process's own calls; it is read afresh every SPEND_REFRESH_SECONDS so that
other replicas' spending counts too. Like the per-user cost limit, a call in flight
when a cap is reached may overshoot it by that call's cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.alerts import Alerts
from bot.audit import AuditLog
from bot.config import Settings
from bot.messages import Message
from bot.store import Store

log = logging.getLogger(__name__)

SPEND_REFRESH_SECONDS = 10.0
MAX_CLAIMED = 1000
REFUSED = (
    "Parley has reached its {period} spending cap{where} (${limit:.2f}), so it cannot "
    "answer now. It will answer again {when}; an admin can raise the cap."
)
FALLBACK_NOTE = (
    "(Parley's {period} budget{where} is used up, so a smaller model, {model}, answered.)"
)
ALERT = (
    "Parley budget {level}: {scope} has spent ${spent:.2f} of its {period} cap of "
    "${limit:.2f} ({share:.0%}). {consequence}"
)


@dataclass(frozen=True, slots=True)
class Cap:
    scope: str  # "all" or "platform:workspace"
    period: str  # "daily" or "monthly"
    limit: float

    @property
    def where(self) -> str:
        return "" if self.scope == "all" else f" for {self.scope}"


@dataclass(frozen=True, slots=True)
class Decision:
    refusal: str = ""  # refuse with this text
    model: str = ""  # or answer with this model
    note: str = ""  # and tell the user so


ALLOW = Decision()


def period_start(period: str, now: float) -> tuple[float, str]:
    """The start of the UTC day or month containing now, and its name."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.strftime("%Y-%m-%d")
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp(), start.strftime("%Y-%m")


def _caps(settings: Settings, message: Message) -> list[Cap]:
    caps = [
        Cap("all", "daily", settings.budget_daily_usd),
        Cap("all", "monthly", settings.budget_monthly_usd),
    ]
    scope = f"{message.platform}:{message.workspace}"
    own = settings.budget_workspaces.get(scope, {})
    caps += [Cap(scope, "daily", own.get("daily_usd", 0.0)),
             Cap(scope, "monthly", own.get("monthly_usd", 0.0))]  # fmt: skip
    return [cap for cap in caps if cap.limit > 0]


class Budget:
    def __init__(
        self, settings: Settings, store: Store, alerts: Alerts, audit: AuditLog,
        clock: Callable[[], float], count_alert: Callable[[str, str], None],
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.alerts = alerts
        self.audit = audit
        self.clock = clock
        self.count_alert = count_alert
        # (scope, period name) -> (spend, when it was read); one entry per scope and
        # period in use, and older periods are dropped as new ones come.
        self.spend: dict[tuple[str, str], tuple[float, float]] = {}
        # Alert keys this process knows are claimed: past a warning level every request
        # would otherwise try the claim again, a write each.
        self.claimed: set[str] = set()

    @property
    def enabled(self) -> bool:
        s = self.settings
        return bool(s.budget_daily_usd or s.budget_monthly_usd or s.budget_workspaces)

    async def decide(self, message: Message) -> Decision:
        if not self.enabled:
            return ALLOW
        now = self.clock()
        reached: Cap | None = None
        for cap in _caps(self.settings, message):
            spent = await self._spent(cap, now)
            if spent >= cap.limit * self.settings.budget_warn_at:
                await self._alert(cap, "warning" if spent < cap.limit else "cap", spent, now)
            if spent >= cap.limit and reached is None:
                reached = cap
        if reached is None:
            return ALLOW
        fallback = self.settings.budget_fallback_model
        if fallback:
            note = FALLBACK_NOTE.format(period=reached.period, where=reached.where, model=fallback)
            return Decision(model=fallback, note=note)
        when = "tomorrow (00:00 UTC)" if reached.period == "daily" else "next month"
        text = REFUSED.format(
            period=reached.period, where=reached.where, limit=reached.limit, when=when
        )
        return Decision(refusal=text)

    def add(self, message: Message, cost: float | None) -> None:
        """This process's call cost this much: count it without reading the store."""
        if not cost or not self.enabled:
            return
        for key, (spent, read_at) in list(self.spend.items()):
            scope = key[0]
            if scope in ("all", f"{message.platform}:{message.workspace}"):
                self.spend[key] = (spent + cost, read_at)

    async def _spent(self, cap: Cap, now: float) -> float:
        start, name = period_start(cap.period, now)
        key = (cap.scope, name)
        cached = self.spend.get(key)
        if cached is not None and now - cached[1] < SPEND_REFRESH_SECONDS:
            return cached[0]
        platform, _, workspace = cap.scope.partition(":") if cap.scope != "all" else ("", "", "")
        spent = await self.store.spend_since(start, platform, workspace)
        for old in [k for k in self.spend if k[0] == cap.scope and len(k[1]) == len(name)]:
            del self.spend[old]  # the same scope's earlier periods
        self.spend[key] = (spent, now)
        return spent

    async def _alert(self, cap: Cap, level: str, spent: float, now: float) -> None:
        _, name = period_start(cap.period, now)
        key = f"{level}:{cap.period}:{name}:{cap.scope}"
        if key in self.claimed:
            return
        if len(self.claimed) > MAX_CLAIMED:
            self.claimed.clear()  # keys of past periods; a retry only asks the store
        self.claimed.add(key)
        text = self._alert_text(cap, level, spent)
        if await self.store.claim_alert(key, now):  # the row, metric and log line: once
            await self._record(cap, level, spent, name, text)

        async def claim(admin: str) -> bool:  # the direct messages: once per admin
            return await self.store.claim_alert(f"{key} {admin}", now)

        await self.alerts.notify(text, claim)

    def _alert_text(self, cap: Cap, level: str, spent: float) -> str:
        if level == "cap":
            fallback = self.settings.budget_fallback_model
            consequence = (
                f"Requests are now answered by {fallback}." if fallback
                else "Requests are refused until the period ends."
            )  # fmt: skip
        else:
            consequence = "Requests are still answered."
        scope = "Parley" if cap.scope == "all" else cap.scope
        return ALERT.format(
            level=level, scope=scope, spent=spent, period=cap.period, limit=cap.limit,
            share=spent / cap.limit, consequence=consequence,
        )  # fmt: skip

    async def _record(self, cap: Cap, level: str, spent: float, name: str, text: str) -> None:
        self.count_alert(level, cap.period)
        log.warning("alert to admins: %s", text)
        await self.audit.record(
            "parley", ("", "", ""), f"budget.{level}", f"{cap.scope} {cap.period} {name}",
            f"${cap.limit:.2f} cap", f"${spent:.2f} spent",
        )  # fmt: skip
