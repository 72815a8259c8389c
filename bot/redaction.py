"""Keeping private data away from the model provider, and secrets away from everyone.

Redaction ([redaction] enabled): e-mail addresses, phone numbers, payment card numbers
(only card-shaped digit runs that pass the Luhn check, so order numbers, ids and
timestamps stay) and custom regular expressions become placeholders such as [EMAIL_1]
in what is sent to the model. The same value gets the same placeholder within one
request, so the model can still tell two addresses apart.

Secret masking ([redaction] mask_secrets, on by default): API keys and tokens in the
shapes OpenAI, Slack, Discord, AWS and bearer tokens have are masked in model output
and tool results before they are shown or stored. A streamed answer is masked as it
streams (SecretStream), holding back only the unfinished word at the end of each piece.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, whole or grouped as cards print them (4-4-4-4..., Amex 4-6-5), led by
# a card network's digit (2-6). Any digits in any grouping matched Discord and tweet ids
# (19 digits from 1), millisecond times and pairs of dates whenever they passed Luhn.
CARD = re.compile(
    r"(?<![\d-])[2-6](?:\d{12,18}|\d{3}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?"
    r"|\d{3}[ -]\d{6}[ -]\d{4,5})(?![\d-])"
)
CARD_DIGITS = range(13, 20)
# An optional +country code, then at least 7 digits in groups (with an optional
# bracketed area code): "+1 (555) 010-4477", "+44 20 7946 0958", "555-010-4477".
# Groups are separated by spaces or dashes (dots would take IP addresses), and the
# last group has 3 or 4 digits, which leaves dates such as 2026-12-01 alone. The middle
# groups are bounded: unbounded, "11 11 11 ..." was rescanned to its end from every
# group (quadratic: 16 KB took a second); no phone of 15 digits has more than 12.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ -]?)?(?:\(\d{1,4}\)[ -]?)?"
    r"\d{1,4}(?:[ -]\d{2,4}){0,12}[ -]\d{3,4}(?![\w-])"
)
MIN_PHONE_DIGITS = 7
# Phones and cards both have at least 7 digits, separated by at most a few characters.
SEVEN_DIGITS = re.compile(r"\d(?:[ ()+-]*\d){6}")
MAX_PHONE_DIGITS = 15  # E.164's longest; longer runs are card or order numbers

# One \b for all the shapes: a \b in front of each alternative made the scan 5 times
# slower (bench/safety_bench.py).
SECRETS = re.compile(
    r"\b(?:"
    + "|".join(
        (
            r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI
            r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack bot, user and other tokens
            r"xapp-\d-[A-Za-z0-9-]{10,}",  # Slack app-level token
            r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}",  # Discord
            r"(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key id
            r"[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9._~+/-]{15,}[A-Za-z0-9]=*",  # Bearer ...
        )
    )
    + ")"
)
SECRET_MASK = "[secret removed]"
# The unfinished word at the end of a streamed piece that may still grow into a secret
# (or a "Bearer" with its token to come): only such a word is held back, so streamed
# text is rarely delayed at all.
# A secret starts at a word boundary anywhere in that word ("token=sk-...", "<xoxb-...>"),
# so the earliest such start is searched for, not only the word's first letter.
_SECRET_START = re.compile(
    r"\b(?:s|sk|sk-\S*|x|xo|xox\S*|xa|xap|xapp\S*|[MNO]\S*|A|AK|AKI|AKIA\S*|AS|ASI|ASIA\S*"
    r"|(?i:b|be|bea|bear|beare|bearer)(?:\s+\S*)?)\Z"
)
# A streamed word longer than this is shown (masked) without waiting for its end.
HOLD_LIMIT = 400


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mask_secrets(text: str) -> str:
    return SECRETS.sub(SECRET_MASK, text) if text else text


class Redactor:
    """Replaces private data by placeholders; one instance per request (it numbers
    the values it has seen)."""

    def __init__(self, extra: Sequence[re.Pattern[str]] = ()) -> None:
        self.extra = extra
        self.seen: dict[tuple[str, str], str] = {}
        self.count: dict[str, int] = {}

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self.seen:
            self.count[kind] = self.count.get(kind, 0) + 1
            self.seen[key] = f"[{kind}_{self.count[kind]}]"
        return self.seen[key]

    def redact(self, text: str) -> str:
        if not text:
            return text
        for pattern in self.extra:
            text = pattern.sub(lambda m: self._placeholder("REDACTED", m.group(0)), text)
        # Cheap tests first: most messages have no "@" and no run of 7 digits, and the
        # full patterns cost 5-10 times more to scan (bench/safety_bench.py).
        if "@" in text:
            text = EMAIL.sub(lambda m: self._placeholder("EMAIL", m.group(0)), text)
        if SEVEN_DIGITS.search(text):
            text = CARD.sub(self._card, text)
            text = PHONE.sub(self._phone, text)
        return text

    def _card(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) in CARD_DIGITS and luhn_valid(digits):
            return self._placeholder("CARD", digits)
        return match.group(0)

    def _phone(self, match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
            return match.group(0)
        return self._placeholder("PHONE", digits)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


def redact_prompt(
    messages: Sequence[dict[str, Any]], extra: Sequence[re.Pattern[str]], summary_heading: str = ""
) -> list[dict[str, Any]]:
    """A copy of the prompt with private data replaced; the system prompt (the admins'
    own text) is left as it is, but not a conversation summary appended to it after
    `summary_heading` (it may have been written before redaction was turned on)."""
    redactor = Redactor(extra)
    redacted: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if message.get("role") != "system" and isinstance(content, str) and content:
            message = {**message, "content": redactor.redact(content)}
        elif summary_heading and isinstance(content, str) and summary_heading in content:
            own, _, summary = content.partition(summary_heading)
            message = {**message, "content": own + summary_heading + redactor.redact(summary)}
        if message.get("tool_calls"):  # arguments stored before redaction was turned on
            message = {
                **message,
                "tool_calls": [_redact_call(c, redactor) for c in message["tool_calls"]],
            }
        redacted.append(message)
    return redacted


def _redact_call(call: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return call
    return {**call, "function": {**function, "arguments": redactor.redact(arguments)}}


class SecretStream:
    """Masks secrets in a streamed answer piece by piece.

    A secret never contains whitespace, so everything up to the last whitespace of
    what has come so far can be masked and shown; the unfinished word after it waits
    for the next piece if it may still become a secret (as does a "Bearer" just before
    its token). Work per piece is proportional to the piece, never to the answer."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        cut = _last_boundary(text)
        if cut < len(text):
            # Hold back from where a secret may be starting; a word longer than
            # HOLD_LIMIT is shown (masked) up to its last HOLD_LIMIT characters.
            start = _SECRET_START.search(text, max(cut, len(text) - HOLD_LIMIT))
            cut = start.start() if start else len(text)
        self.held = text[cut:]
        return mask_secrets(text[:cut]) if cut else ""

    def flush(self) -> str:
        """The end of the stream: what was held back, masked."""
        text, self.held = self.held, ""
        return mask_secrets(text)


def _last_boundary(text: str) -> int:
    """Where the shown part ends: after the last whitespace, or before a trailing
    "bearer " whose token may still be coming."""
    end = len(text.rstrip())
    index = max(text.rfind(" ", 0, end + 1), text.rfind("\n", 0, end + 1))
    if index < 0:
        return 0
    if end == len(text):  # the text ends in a word, maybe unfinished: hold it back
        cut = index + 1
    else:  # the text ends in whitespace: everything is finished
        cut = len(text)
    before = text[:cut].rstrip()
    if before[-6:].lower() == "bearer":  # its token may be in the next piece
        return len(before) - 6
    return cut
