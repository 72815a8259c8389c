"""What the engine asks of moderation, redaction, budgets and the audit log, in one
place, so that the engine calls each with one line.

Before a question is admitted, screen() moderates it and consults the budget: a
flagged message is refused before it is stored or sent anywhere. outgoing() redacts
what goes to the model; stored_text() is what history keeps. A streamed answer is
masked as it streams (stream_masker), and review() checks the finished answer:
secrets masked, and, with moderation.check_answers, a flagged answer replaced by a
note (the FINAL event replaces whatever was streamed, on every adapter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from bot.alerts import Alerts
from bot.audit import AuditLog, excerpt
from bot.budget import Budget, Decision
from bot.config import Settings
from bot.llm import Completion, ModelClient
from bot.messages import Message, ReplyEvent, ReplyKind
from bot.metrics import Metrics
from bot.moderation import Moderator, Verdict
from bot.prompting import SUMMARY_HEADING
from bot.redaction import (
    Redactor,
    SecretStream,
    compile_patterns,
    mask_secrets,
    redact_prompt,
)
from bot.store import Store

log = logging.getLogger(__name__)

FLAGGED = "Sorry, I can't help with that message: it goes against this workspace's content policy."
UNCHECKED = (
    "Sorry, I can't check messages against the content policy right now, so I can't "
    "answer. Please try again in a few minutes."
)
WITHHELD = "(The answer was withheld: it did not pass this workspace's content policy.)"


@dataclass(frozen=True, slots=True)
class Screened:
    """The verdict on a question before it is admitted."""

    refusal: ReplyEvent | None = None
    model: str = ""  # answer with this model instead of the channel's
    notice: str = ""  # tell the user this alongside the answer


PASS = Screened()


class _PassThrough:
    def feed(self, piece: str) -> str:
        return piece

    def flush(self) -> str:
        return ""


class Safety:
    def __init__(
        self, settings: Settings, store: Store, model: ModelClient, metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.clock = clock
        self.audit = AuditLog(store, clock)
        self.alerts = Alerts(settings.admins)
        self.moderator: Moderator | None = None
        if settings.moderation_enabled:
            self.moderator = Moderator(
                model.client, provider=settings.moderation_provider,
                model=settings.moderation_model, patterns=settings.moderation_patterns,
                thresholds=settings.moderation_thresholds,
                fail_closed=settings.moderation_on_failure == "closed",
            )  # fmt: skip
        self.redaction = compile_patterns(settings.redaction_patterns)
        r = metrics.registry
        self.flags = Counter(
            "parley_moderation_flags", "Messages and answers flagged by moderation",
            ["stage", "source"], registry=r,
        )  # fmt: skip
        self.budget_alerts = Counter(
            "parley_budget_alerts", "Budget alerts sent to admins", ["level", "period"],
            registry=r,
        )  # fmt: skip
        self.refusals = metrics.refusals
        self.budget = Budget(
            settings, store, self.alerts, self.audit, clock,
            lambda level, period: self.budget_alerts.labels(level, period).inc(),
        )  # fmt: skip

    # -- before the model ------------------------------------------------------------

    async def screen(self, message: Message, admitted: bool) -> Screened:
        """Moderate a question (unless it was admitted before a restart) and apply the
        budget; the refusal to show, or how to answer."""
        if self.moderator is not None and not admitted and await self._moderated(message):
            # The endpoint is the provider too: it gets the redacted text.
            verdict = await self.moderator.check(message.text, self._redacted(message.text))
            if verdict.flagged:
                return Screened(await self._flagged(message, verdict))
        decision: Decision = await self.budget.decide(message)
        if decision.refusal:
            self.refusals.labels("budget").inc()
            await self.store.record_refusal(message.user_key, "budget", self.clock())
            return Screened(ReplyEvent(ReplyKind.ERROR, decision.refusal, private=True))
        return Screened(None, decision.model, decision.note) if decision.model else PASS

    async def _moderated(self, message: Message) -> bool:
        where = (message.platform, message.workspace, message.channel)
        return await self.store.channel_moderation(*where) != "off"

    async def _flagged(self, message: Message, verdict: Verdict) -> ReplyEvent:
        self.flags.labels("input", verdict.source).inc()
        self.refusals.labels("moderation").inc()
        await self.store.record_refusal(message.user_key, "moderation", self.clock())
        unchecked = verdict.source == "unavailable"
        action = "moderation.unavailable" if unchecked else "moderation.flagged"
        await self.audit.by_message(
            message, action, verdict.reason, excerpt(self.stored_text(message.text)), "refused"
        )
        return ReplyEvent(ReplyKind.ERROR, UNCHECKED if unchecked else FLAGGED, private=True)

    def _redacted(self, text: str) -> str:
        if not self.settings.redaction_enabled:
            return text
        return Redactor(self.redaction).redact(text)

    def stored_text(self, text: str) -> str:
        """What history keeps of a user's message."""
        return text if self.settings.redaction_store_original else self._redacted(text)

    def outgoing(self, prompt: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        """What is sent to the model: private data replaced by placeholders."""
        if not self.settings.redaction_enabled:
            return prompt
        return redact_prompt(prompt, self.redaction, SUMMARY_HEADING)

    # -- after the model -------------------------------------------------------------

    def stream_masker(self) -> SecretStream | _PassThrough:
        return SecretStream() if self.settings.redaction_mask_secrets else _PassThrough()

    def tool_result(self, text: str) -> str:
        return mask_secrets(text) if self.settings.redaction_mask_secrets else text

    def masked(self, text: str) -> str:
        """Model output that is stored and shown outside an answer (a summary)."""
        return self.tool_result(text)

    async def review(self, message: Message, completion: Completion) -> Completion:
        """The finished answer as it may be shown and stored."""
        if self.settings.redaction_mask_secrets:
            completion.text = mask_secrets(completion.text)
        check = self.moderator is not None and self.settings.moderation_check_answers
        if not check or completion.tool_calls or not completion.text.strip():
            return completion
        if not await self._moderated(message):
            return completion
        assert self.moderator is not None
        verdict = await self.moderator.check(completion.text)
        if verdict.flagged:
            self.flags.labels("answer", verdict.source).inc()
            await self.audit.by_message(
                message, "moderation.answer_withheld", verdict.reason,
                excerpt(completion.text), "withheld",
            )  # fmt: skip
            completion.text = WITHHELD
        return completion

    def spent(self, message: Message, cost: float | None) -> None:
        self.budget.add(message, cost)

    async def prune(self) -> None:
        await self.audit.prune(self.settings.audit_retain_days)
