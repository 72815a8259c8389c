"""The usage dashboard at GET /admin, behind PARLEY_ADMIN_TOKEN.

Never served without the token: with PARLEY_ADMIN_TOKEN unset /admin is a 404 page saying
how to turn it on, and nothing more.
The token comes as "Authorization: Bearer <token>" (scripts) or once as
?token= (browsers), which leaves an HttpOnly cookie. The page is rendered on the server
with inline SVG charts and one stylesheet served from here: it works offline, runs no
script at all, and every figure or name in it is escaped.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.web_audit import AUDIT_ROWS, audit_filters, audit_section
from adapters.web_auth import (
    ADMIN_COOKIE,
    LOOPBACK_ONLY,
    WRONG_HOST,
    has_cookie,
    local_host,
    plain,
    secure_headers,
    sign_in,
    token_matches,
)
from bot.charts import DayUsage, daily_usage, format_cost, usage_svgs
from bot.config import secret
from bot.http import ENGINE_KEY
from bot.report import cached_share, format_share
from bot.store import Store
from bot.store.audit_rows import AuditEntry
from bot.usage import parse_period

STYLESHEET = Path(__file__).parent / "static" / "admin.css"
PERIODS = ("24h", "7d", "30d", "90d")
DEFAULT_PERIOD = "7d"
TOP = 10
SIGN_IN = (
    "Parley admin: send Authorization: Bearer <PARLEY_ADMIN_TOKEN>, "
    "or open /admin?token=<PARLEY_ADMIN_TOKEN> once in this browser."
)
DASHBOARD_OFF = (
    "The usage dashboard is off. To turn it on, set PARLEY_ADMIN_TOKEN to a long random "
    "secret, restart Parley, then open /admin?token=<PARLEY_ADMIN_TOKEN> once."
)


@dataclass(frozen=True, slots=True)
class Dashboard:
    period: str
    days: list[DayUsage]
    users: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    models: list[dict[str, Any]]
    refusals: dict[str, int]
    audit: list[AuditEntry] = field(default_factory=list)
    audit_user: str = ""
    audit_action: str = ""


def add_admin_routes(app: web.Application) -> None:
    """Mount /admin (once: the runner and the web adapter may both ask)."""
    if "parley-admin" in app.router.named_resources():
        return
    app.router.add_get("/admin", dashboard, name="parley-admin")
    app.router.add_get("/admin/admin.css", stylesheet)


async def stylesheet(request: web.Request) -> web.Response:
    response = web.Response(body=STYLESHEET.read_bytes(), content_type="text/css", charset="utf-8")
    secure_headers(response, cache=True)
    return response


async def dashboard(request: web.Request) -> web.StreamResponse:
    token = secret("PARLEY_ADMIN_TOKEN")
    if not token:  # off; say how to turn it on (nothing else is revealed)
        return plain(DASHBOARD_OFF, 404)
    if request.app.get(LOOPBACK_ONLY, False) and not local_host(request):
        return plain(WRONG_HOST, 403)  # see web_auth: DNS rebinding
    refusal = _refuse(request, token)
    if refusal is not None:
        return refusal
    if "token" in request.query:
        return sign_in(request, ADMIN_COOKIE, token)
    period = request.query.get("since", DEFAULT_PERIOD).strip() or DEFAULT_PERIOD
    try:
        seconds = parse_period(period)
    except ValueError as error:
        return _page(render_problem(period, str(error)), 400)
    engine = request.app[ENGINE_KEY]
    now = engine.clock()
    data = await gather(engine.store, period, now - seconds, now, *audit_filters(request.query))
    # Hundreds of bars and table rows are CPU work: off the loop, so chats keep flowing.
    return _page(await asyncio.to_thread(render, data), 200)


def _refuse(request: web.Request, token: str) -> web.Response | None:
    """401 when no credential came, 403 when a wrong one did, None when it is right."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and token_matches(given.strip(), token)
        return None if ok else plain("Wrong admin token.", 403)
    if "token" in request.query:
        ok = token_matches(request.query["token"], token)
        return None if ok else plain("Wrong admin token.", 403)
    if has_cookie(request, ADMIN_COOKIE, token):
        return None
    response = plain(SIGN_IN, 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="parley-admin"'
    return response


async def gather(
    store: Store, period: str, since: float, now: float, user: str = "", action: str = ""
) -> Dashboard:
    """Everything the page shows, through the store's read-only report methods."""
    return Dashboard(
        period,
        daily_usage(await store.usage_report(since, "day"), since, now),
        await store.usage_report(since, "user", limit=TOP),
        await store.usage_report(since, "channel", limit=TOP),
        await store.usage_report(since, "model", limit=TOP),
        await store.refusal_counts(since),
        await store.audit_entries(since, user, action, AUDIT_ROWS),
        user,
        action,
    )


# --- rendering: every dynamic string goes through html.escape ------------------------


def render(data: Dashboard) -> str:
    sections = [
        _summary(data),
        '<section class="charts">' + "".join(usage_svgs(data.days)) + "</section>",
        _table_section("Top users", "user", data.users),
        _table_section("Top channels", "channel", data.channels),
        _table_section("Models", "model", data.models),
        _refusal_section(data.refusals),
        _table_section("Per day", "day", [_day_row(day) for day in data.days]),
        audit_section(data.audit, data.period, data.audit_user, data.audit_action),
    ]
    return _document(data.period, "".join(sections))


def render_problem(period: str, problem: str) -> str:
    body = f'<p class="problem" role="alert">{html.escape(problem)}</p>'
    return _document(period, body)


def _document(period: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Parley usage</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/admin/admin.css"></head><body>'
        f"<header><h1>Parley usage, last {html.escape(period)}</h1>{_period_form(period)}"
        f"</header><main>{body}</main></body></html>"
    )


def _period_form(period: str) -> str:
    links = " ".join(f'<a href="/admin?since={p}">{p}</a>' for p in PERIODS)
    return (
        '<form method="get" action="/admin"><label>Period '
        f'<input name="since" value="{html.escape(period, quote=True)}" size="6"'
        ' title="a number and a unit: m, h, d or w"></label>'
        f' <button type="submit">Show</button> <span class="quick">{links}</span></form>'
    )


def _summary(data: Dashboard) -> str:
    requests = sum(day.requests for day in data.days)
    errors = sum(day.errors for day in data.days)
    tokens = sum(day.total_tokens for day in data.days)
    costs = [day.cost_usd for day in data.days]
    cost = None if None in costs else sum(c or 0.0 for c in costs)
    rate = f"{100 * errors / requests:.1f}%" if requests else "n/a"
    prompt = sum(day.prompt_tokens for day in data.days)
    cached = sum(day.cached_tokens for day in data.days)
    share = format_share(cached_share({"prompt_tokens": prompt, "cached_tokens": cached}))
    cards = [
        ("Requests", f"{requests:,}"),
        ("Tokens", f"{tokens:,}"),
        ("Cached input", f"{cached:,} ({share or 'n/a'})"),
        ("Cost", _cost(cost)),
        ("Error rate", f"{rate} ({errors:,} errors)"),
        ("Refused by limits", f"{sum(data.refusals.values()):,}"),
    ]
    items = "".join(
        f'<div class="card"><span class="label">{html.escape(label)}</span>'
        f'<span class="value">{html.escape(value)}</span></div>'
        for label, value in cards
    )
    return f'<section class="cards">{items}</section>'


def _cost(value: float | None) -> str:
    return "unknown" if value is None else format_cost(value)


def _day_row(day: DayUsage) -> dict[str, Any]:
    return {
        "key": day.day, "requests": day.requests, "total_tokens": day.total_tokens,
        "cost_usd": day.cost_usd, "errors": day.errors, "prompt_tokens": day.prompt_tokens,
        "cached_tokens": day.cached_tokens,
    }  # fmt: skip


def _table_section(title: str, by: str, rows: Sequence[Mapping[str, Any]]) -> str:
    names = (by, "requests", "tokens", "cached input", "cost", "errors", "error rate")
    head = "".join(f"<th>{name}</th>" for name in names)
    body = "".join(_table_row(row) for row in rows) or '<tr><td colspan="7">none</td></tr>'
    return (
        f"<section><h2>{html.escape(title)}</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _table_row(row: Mapping[str, Any]) -> str:
    requests, errors = int(row["requests"] or 0), int(row["errors"] or 0)
    cells = [
        f"{requests:,}",
        f"{int(row['total_tokens'] or 0):,}",
        f"{int(row.get('cached_tokens') or 0):,} {format_share(cached_share(row))}".strip(),
        _cost(row["cost_usd"]),
        f"{errors:,}",
        f"{100 * errors / requests:.1f}%" if requests else "",
    ]
    numbers = "".join(f'<td class="n">{html.escape(cell)}</td>' for cell in cells)
    return f"<tr><td>{html.escape(str(row['key']))}</td>{numbers}</tr>"


def _refusal_section(refusals: Mapping[str, int]) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(kind)}</td><td class="n">{count:,}</td></tr>'
        for kind, count in sorted(refusals.items())
    )
    body = rows or '<tr><td colspan="2">none</td></tr>'
    return (
        "<section><h2>Refused by limits</h2><table><thead><tr><th>limit</th><th>refusals</th>"
        f"</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _page(text: str, status: int) -> web.Response:
    response = web.Response(text=text, status=status, content_type="text/html")
    secure_headers(response)
    return response
