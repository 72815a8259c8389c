"""Moderation ([moderation]): the provider's /v1/moderations endpoint, a local list
of words and regular expressions, or both.

The endpoint is called through the same OpenAI client as the chat model. Where
[moderation.thresholds] names a category, its score decides (flagged at or above the
threshold); other categories follow the endpoint's own verdict. When the endpoint
fails, on_failure decides: "closed" treats the text as flagged, "open" lets it pass;
either way the failure is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)

# A check of one text may take this long before it counts as a failure.
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()
    source: str = ""  # "openai", "patterns", or "unavailable" (the endpoint failed)

    @property
    def reason(self) -> str:
        return ", ".join(self.categories) or self.source


PASSED = Verdict(False)


def compile_word_patterns(patterns: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    """A plain word matches as a whole word; anything else is a regular expression.
    Both ignore case."""
    return tuple(
        re.compile(rf"\b{pattern}\b" if re.fullmatch(r"\w+", pattern) else pattern, re.IGNORECASE)
        for pattern in patterns
    )


class Moderator:
    def __init__(
        self,
        client: AsyncOpenAI | None,
        *,
        provider: str,
        model: str,
        patterns: Sequence[str],
        thresholds: Mapping[str, float],
        fail_closed: bool,
    ) -> None:
        self.client = client
        self.use_endpoint = provider in ("openai", "both") and client is not None
        self.use_patterns = provider in ("patterns", "both")
        self.model = model
        self.patterns = compile_word_patterns(patterns)
        self.thresholds = dict(thresholds)
        self.fail_closed = fail_closed

    async def check(self, text: str, sent: str | None = None) -> Verdict:
        """`sent`: the text as the provider may see it (redacted), if it differs."""
        if self.use_patterns:
            verdict = self._match_patterns(text)
            if verdict.flagged:
                return verdict
        if self.use_endpoint:
            return await self._ask_endpoint(text if sent is None else sent)
        return PASSED

    def _match_patterns(self, text: str) -> Verdict:
        for pattern in self.patterns:
            if pattern.search(text):
                return Verdict(True, ("pattern",), "patterns")
        return PASSED

    async def _ask_endpoint(self, text: str) -> Verdict:
        assert self.client is not None
        try:
            response = await self.client.moderations.create(
                input=text, model=self.model, timeout=TIMEOUT_SECONDS
            )
            result = response.results[0]
        except (openai.OpenAIError, IndexError) as error:
            policy = "refusing the message" if self.fail_closed else "letting it pass"
            log.warning("moderation endpoint failed (%s); %s", type(error).__name__, policy)
            return Verdict(self.fail_closed, (), "unavailable")
        flags = result.categories.model_dump(by_alias=True)
        scores = result.category_scores.model_dump(by_alias=True)
        flagged = tuple(
            sorted(
                category
                for category, score in scores.items()
                if (
                    score >= self.thresholds[category]
                    if category in self.thresholds
                    else bool(flags.get(category))
                )
            )
        )
        return Verdict(bool(flagged), flagged, "openai")
