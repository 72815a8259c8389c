"""Telling admins: a neutral way out of the engine for messages nobody asked for.

The engine (budgets) calls Alerts.notify; the runner registers each adapter that can
send a direct message under its platform's name. The engine never imports an adapter:
an admin "slack:U123" is reached through whatever sender is registered for "slack".
Every alert is also a log line, so admins on platforms without a sender (the
terminal, the web chat) and operators reading logs see it too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

# send(user id on that platform, text) -> delivered
DirectSender = Callable[[str, str], Awaitable[bool]]
# claim(admin) -> True for the one process that is to send this alert to that admin
Claim = Callable[[str], Awaitable[bool]]


class Alerts:
    def __init__(self, admins: Sequence[str]) -> None:
        self.admins = tuple(admins)
        self.senders: dict[str, DirectSender] = {}

    def register(self, platform: str, sender: DirectSender) -> None:
        self.senders[platform] = sender

    async def notify(self, text: str, claim: Claim | None = None) -> int:
        """Log the alert and send it to every admin who can be reached; how many were.

        With `claim`, the line is not logged (the caller logs it once) and each admin
        reachable here is claimed first: another process, running the adapters this one
        does not (the Procfile's slack and discord), sends to the admins it can reach."""
        if claim is None:
            log.warning("alert to admins: %s", text)
        reached = 0
        for admin in self.admins:
            platform, _, user = admin.partition(":")
            sender = self.senders.get(platform)
            if sender is None or (claim is not None and not await claim(admin)):
                continue
            try:
                reached += bool(await sender(user, text))
            except Exception:  # one unreachable admin must not keep the others in the dark
                log.exception("alert to %s not delivered", admin)
        return reached
