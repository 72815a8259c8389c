"""Prometheus metrics for one engine, in their own registry (served at GET /metrics)."""

from __future__ import annotations

from collections.abc import Container

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.llm import USER_MESSAGES, Usage

# Engine time is sub-millisecond to a few ms; model calls take seconds.
ENGINE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
MODEL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 60, 120)
# Every label value is one of a fixed set: each new value is a new series Prometheus
# keeps for good, and tool names and a tool's own error kinds come from the model or
# from plugins. Anything else is counted under one catch-all value.
TOOL_STATUSES = frozenset(
    {"ok", "unknown_tool", "bad_json", "invalid_arguments", "timeout", "exception"}
)
MODEL_STATUSES = frozenset({"ok", "cancelled", *USER_MESSAGES})
UNKNOWN_TOOL = "unknown"


def bounded(value: str, allowed: Container[str], other: str = "other") -> str:
    """`value` if it is one of `allowed`, else `other`."""
    return value if value in allowed else other


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("parley_messages", "Messages handled", ["platform"], registry=r)
        self.model_calls = Counter(
            "parley_model_calls", "Model calls by outcome", ["status"], registry=r
        )
        self.engine_seconds = Histogram(
            "parley_engine_seconds", "Engine time per message, model calls excluded",
            buckets=ENGINE_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            "parley_first_token_seconds", "Time from model call to first token",
            buckets=MODEL_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_seconds = Histogram(
            "parley_model_call_seconds", "Total time of a model call",
            buckets=MODEL_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("parley_tokens", "Tokens by kind", ["kind"], registry=r)
        # Looked up once: labels() takes a lock and builds a key on every call.
        self.prompt_tokens = self.tokens.labels("prompt")
        self.completion_tokens = self.tokens.labels("completion")
        self.cached_tokens = self.tokens.labels("cached")
        # /usage counts these as requests of kind "cached"; they make no model call.
        self.cached_answers = Counter(
            "parley_cached_answers", "Answers given from the response cache", registry=r
        )
        self.cost = Counter("parley_cost_usd", "Cost of model calls with a known price", registry=r)
        self.refusals = Counter(
            "parley_rate_limit_refusals", "Requests refused by a limit", ["limit"], registry=r
        )
        self.access_refusals = Counter(
            "parley_access_refusals", "Messages not answered by the access lists", ["reason"],
            registry=r,
        )  # fmt: skip
        self.tool_calls = Counter(
            "parley_tool_calls", "Tool calls by tool and outcome", ["tool", "status"], registry=r
        )
        self.delivery_failures = Counter(
            "parley_delivery_failures", "Answers (stored) that could not be shown to the user",
            ["platform"], registry=r,
        )  # fmt: skip
        self.attachments = Counter(
            "parley_attachments", "Files sent with messages, by kind and whether they were used",
            ["kind", "outcome"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "parley_model_calls_in_flight", "Model calls in flight now", registry=r
        )
        # The provider's prompt cache at work: cached input over all input since start.
        self.cached_share = Gauge(
            "parley_prompt_cached_share", "Share of prompt tokens the provider had cached",
            registry=r,
        )  # fmt: skip
        self._prompt_total = 0
        self._cached_total = 0

    def count_call(
        self, status: str, usage: Usage | None, cost: float | None, elapsed: float
    ) -> None:
        """One model call (an answer's or a summary's): outcome, time, tokens, cost."""
        self.count_model_call(status)
        self.model_seconds.observe(elapsed)
        if usage:
            self.prompt_tokens.inc(usage.prompt_tokens)
            self.completion_tokens.inc(usage.completion_tokens)
            self.cached_tokens.inc(usage.cached_tokens)
            self._prompt_total += usage.prompt_tokens
            self._cached_total += usage.cached_tokens
            if self._prompt_total:
                self.cached_share.set(self._cached_total / self._prompt_total)
        if cost:
            self.cost.inc(cost)

    def count_tool_call(self, name: str, registered: Container[str], error_kind: str) -> None:
        """A tool call by name; a name not registered (the model made it up) is "unknown"."""
        tool = bounded(name, registered, UNKNOWN_TOOL)
        self.tool_calls.labels(tool, bounded(error_kind or "ok", TOOL_STATUSES, "error")).inc()

    def count_model_call(self, status: str) -> None:
        self.model_calls.labels(bounded(status, MODEL_STATUSES)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
