"""The audit log: every admin action and safety event as one row.

Rows are written through AuditLog.record (commands, the CLI, moderation, budgets) and
read by `python -m bot audit`, `/audit` in chat and the /admin dashboard, all through
the formatting here. Nothing deletes rows except audit.retain_days.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.messages import Message
from bot.store import Store
from bot.store.audit_rows import AuditEntry

log = logging.getLogger(__name__)

FIELDS = ("at", "actor", "platform", "workspace", "channel", "action", "target", "before", "after")
# Longest before/after text a chat table shows (the JSON and CSV carry all of it).
CELL_LIMIT = 60
# Longest text of a flagged message kept in its audit row.
EXCERPT_LIMIT = 200


def excerpt(text: str, limit: int = EXCERPT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AuditLog:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    async def record(
        self, actor: str, where: tuple[str, str, str], action: str,
        target: str = "", before: str = "", after: str = "",
    ) -> None:  # fmt: skip
        """Write one row; a failure is logged, never raised: an action that was done
        must not be reported to its user as failed because its audit row was not."""
        platform, workspace, channel = where
        entry = AuditEntry(
            self.clock(), actor, platform, workspace, channel, action, target, before, after
        )
        try:
            await self.store.add_audit(entry)
        except Exception:
            log.exception("audit row for %s by %s not written", action, actor)

    async def by_message(
        self, message: Message, action: str, target: str = "", before: str = "", after: str = ""
    ) -> None:
        where = (message.platform, message.workspace, message.channel)
        await self.record(message.user_key, where, action, target, before, after)

    async def prune(self, retain_days: int) -> None:
        if retain_days:
            deleted = await self.store.prune_audit(self.clock() - retain_days * 86400)
            if deleted:
                log.info("audit: %d rows older than %d days deleted", deleted, retain_days)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def as_records(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """The documented JSON shape: at (ISO 8601, UTC), actor, platform, workspace,
    channel, action, target, before, after."""
    return [
        {name: iso(entry.at) if name == "at" else getattr(entry, name) for name in FIELDS}
        for entry in entries
    ]


def format_json(entries: Sequence[AuditEntry]) -> str:
    return json.dumps(as_records(entries), indent=2)


# A cell a spreadsheet would run as a formula. Flagged messages are quoted in before,
# so a user could otherwise plant "=HYPERLINK(...)" in an admin's export.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def format_csv(entries: Sequence[AuditEntry]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {name: _inert(value) for name, value in record.items()} for record in as_records(entries)
    )
    return buffer.getvalue()


def format_table(entries: Sequence[AuditEntry]) -> str:
    """A fixed-width table, newest first; long before/after texts are shortened."""
    header = ("at", "actor", "where", "action", "target", "before", "after")
    lines = [header] + [
        (
            iso(entry.at).replace("T", " ").removesuffix("Z"),
            entry.actor,
            ":".join(part for part in (entry.platform, entry.workspace, entry.channel) if part),
            entry.action,
            excerpt(entry.target, CELL_LIMIT),
            excerpt(entry.before, CELL_LIMIT),
            excerpt(entry.after, CELL_LIMIT),
        )
        for entry in entries
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
