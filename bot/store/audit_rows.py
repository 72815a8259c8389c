"""The audit log's rows and the budget alerts' claims, as both stores keep them."""

from __future__ import annotations

from dataclasses import dataclass

# One cap on the rows a query returns: the chat command and the dashboard show a page,
# the CLI can ask for more with --limit.
AUDIT_PAGE = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action or safety event: who did what, where, and what changed."""

    at: float
    actor: str  # platform:user, "cli:<login>", or "parley" for the bot itself
    platform: str
    workspace: str
    channel: str
    action: str  # e.g. limits.set, block, forget, system, model, moderation.flagged
    target: str = ""
    before: str = ""
    after: str = ""


AUDIT_COLUMNS = "at, actor, platform, workspace, channel, action, target, before, after"


def audit_filter(user: str, action: str, mark: str = "?") -> tuple[str, list[str]]:
    """Extra WHERE conditions for --user (actor or target) and --action (a prefix
    such as "moderation" matches moderation.flagged), with their parameters.

    `mark` is the parameter style: "?" for SQLite, "$" for PostgreSQL (numbered
    from 2, after the `since` parameter)."""
    conditions: list[str] = []
    parameters: list[str] = []

    def placeholder() -> str:
        return "?" if mark == "?" else f"${len(parameters) + 2}"

    if user:
        first = placeholder()
        parameters.append(user)
        second = placeholder()
        parameters.append(user)
        conditions.append(f" AND (actor = {first} OR target = {second})")
    if action:
        exact = placeholder()
        parameters.append(action)
        prefix = placeholder()
        parameters.append(action + ".%")
        conditions.append(f" AND (action = {exact} OR action LIKE {prefix})")
    return "".join(conditions), parameters
