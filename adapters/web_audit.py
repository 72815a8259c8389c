"""The audit log's table on /admin, with its filters (who, which action).

Rendered on the server like the rest of the dashboard; every value is escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from bot.audit import iso
from bot.store.audit_rows import AuditEntry

AUDIT_ROWS = 100
# Filters are echoed into the page and sent to the store: keep them short.
FILTER_LIMIT = 100
COLUMNS = ("at", "actor", "where", "action", "target", "before", "after")


def audit_filters(query: Mapping[str, str]) -> tuple[str, str]:
    """(user, action) from ?user= and ?action=, trimmed and bounded."""
    return (
        query.get("user", "").strip()[:FILTER_LIMIT],
        query.get("action", "").strip()[:FILTER_LIMIT],
    )


def audit_section(entries: Sequence[AuditEntry], period: str, user: str, action: str) -> str:
    def attribute(value: str) -> str:
        return html.escape(value, quote=True)

    form = (
        '<form method="get" action="/admin" class="filters">'
        f'<input type="hidden" name="since" value="{attribute(period)}">'
        f'<label>User <input name="user" value="{attribute(user)}" size="16"'
        ' placeholder="slack:U123"></label> '
        f'<label>Action <input name="action" value="{attribute(action)}" size="16"'
        ' placeholder="limits, moderation"></label> <button type="submit">Filter</button></form>'
    )
    head = "".join(f"<th>{name}</th>" for name in COLUMNS)
    rows = "".join(_row(entry) for entry in entries) or (
        f'<tr><td colspan="{len(COLUMNS)}">none</td></tr>'
    )
    return (
        f'<section id="audit"><h2>Audit log (newest {AUDIT_ROWS})</h2>{form}'
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _row(entry: AuditEntry) -> str:
    where = ":".join(part for part in (entry.platform, entry.workspace, entry.channel) if part)
    cells = (iso(entry.at), entry.actor, where, entry.action, entry.target, entry.before,
             entry.after)  # fmt: skip
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
