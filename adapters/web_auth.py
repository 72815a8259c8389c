"""Tokens, cookies and security headers shared by the web chat and the admin dashboard.

Cookies never hold a token itself: they hold their issue time and an HMAC of the
cookie's purpose and that time, keyed by the token. So a cookie read off a disk cannot
be typed in as the token, rotating the token signs everyone out, and the server itself
refuses a cookie past its lifetime (Max-Age alone is only the browser's promise).

Without PARLEY_WEB_TOKEN the chat trusts whoever reaches it, which is safe only while
that is this machine. A DNS-rebinding page reaches 127.0.0.1 under its own host name
(and then Origin matches Host), so in that mode only loopback Host names are served.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import time
from urllib.parse import unquote_plus, urlsplit

from aiohttp import web

SESSION_COOKIE = "parley_session"
WEB_COOKIE = "parley_web"
ADMIN_COOKIE = "parley_admin"
SESSION_MAX_AGE = 400 * 86400  # browsers cap cookies at 400 days; history lives that long
WEB_MAX_AGE = 30 * 86400
ADMIN_MAX_AGE = 8 * 3600  # an admin sign-in should not outlive a working day
COOKIE_LIFETIMES = {WEB_COOKIE: WEB_MAX_AGE, ADMIN_COOKIE: ADMIN_MAX_AGE}
# Some slack for a wall clock stepped back after a cookie was issued.
CLOCK_SKEW_SECONDS = 300
# True on an app whose web chat has no PARLEY_WEB_TOKEN: serve loopback Host names only.
LOOPBACK_ONLY = web.AppKey("parley-loopback-only", bool)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
WRONG_HOST = "This Parley web chat only answers at http://127.0.0.1 or http://localhost."
_HOST = re.compile(r"(\[[0-9a-f:.]*\]|[^:\[\]]*)(?::[0-9]{1,5})?")
_SIGNED = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")
# Pages only run our own files; model text can never become script, even if a bug let
# it into the DOM as HTML.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# A query parameter in a logged URL: its name and value, as they were sent.
_QUERY_PARAMETER = re.compile(r"(?<=[?&;])([^=&;\s\"]*)=([^&;\s\"]*)")


def is_loopback(host: str) -> bool:
    """True if only this machine can reach a server bound to host."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as exposed


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing of the token."""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def local_host(request: web.Request) -> bool:
    """The Host header names this machine (any port), as a rebinding page's cannot."""
    match = _HOST.fullmatch(request.host.lower())
    return match is not None and match[1] in LOOPBACK_NAMES


def _signature(token: str, purpose: str, issued: int) -> str:
    message = f"{purpose}:{issued}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def cookie_value(token: str, purpose: str, issued: float | None = None) -> str:
    """'<issue time>.<signature>'; the time is signed too, so it cannot be moved on."""
    when = int(time.time() if issued is None else issued)
    return f"{when}.{_signature(token, purpose, when)}"


def has_cookie(request: web.Request, name: str, token: str) -> bool:
    """The request carries a cookie that presenting `token` set, within its lifetime."""
    match = _SIGNED.fullmatch(request.cookies.get(name, ""))
    if match is None or not token:
        return False
    issued = int(match[1])
    age = time.time() - issued
    if not -CLOCK_SKEW_SECONDS <= age < COOKIE_LIFETIMES[name]:
        return False
    return token_matches(match[2], _signature(token, name, issued))


def sign_in(request: web.Request, name: str, token: str) -> web.Response:
    """After a right ?token=: set the signed cookie that stands for it from now on, and
    go back to the same page with ?token= removed, so it leaves the address bar."""
    query = {k: v for k, v in request.query.items() if k != "token"}
    response = web.Response(
        status=303, headers={"Location": str(request.rel_url.with_query(query))}
    )
    secure_headers(response)
    set_cookie(response, request, name, cookie_value(token, name), COOKIE_LIFETIMES[name])
    return response


def plain(text: str, status: int) -> web.Response:
    """A short plain-text answer (a refusal), with the same security headers."""
    response = web.Response(text=text + "\n", status=status)
    secure_headers(response)
    return response


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int
) -> None:
    # HttpOnly: page script (and so any injected script) cannot read it. Strict: no
    # other site can make the browser send it, which also blocks request forgery.
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
        secure=request.secure,
    )  # fmt: skip


def secure_headers(response: web.StreamResponse, *, cache: bool = False) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-cache" if cache else "no-store"


def same_origin(request: web.Request) -> bool:
    """The browser's Origin names this server (WebSockets have no CORS to lean on)."""
    origin = urlsplit(request.headers.get("Origin", ""))
    return origin.scheme in ("http", "https") and origin.netloc.lower() == request.host.lower()


def redact_tokens(text: str) -> str:
    """Every token= value in the URLs in text replaced, however its name is spelled:
    aiohttp decodes %74oken to token, and so signs in with it, but logs it as sent."""
    return _QUERY_PARAMETER.sub(_redact_parameter, text) if "=" in text else text


def _redact_parameter(match: re.Match[str]) -> str:
    name = match[1]
    for _ in range(3):  # %2574oken is %74oken decoded once: treat it as a token too
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return f"{match[1]}=[redacted]" if name.strip().lower() == "token" else match[0]


class RedactTokens(logging.Filter):
    """Keeps ?token= values out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        # aiohttp also attaches the request line as an extra field for structured logs.
        for name, value in list(vars(record).items()):
            if name != "msg" and isinstance(value, str) and "=" in value:
                setattr(record, name, redact_tokens(value))
        return True


def redact_access_log() -> None:
    """Install RedactTokens on aiohttp's access log, once per process."""
    logger = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
