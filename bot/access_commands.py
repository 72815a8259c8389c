"""/access in chat: admins see and change the access lists (bot/access.py).

/access show
/access allow|block|remove channel|user|role <id>
Ids may be written in full (slack:T1:C2, slack:U1, discord:<guild>:<role>) or as the
platform shows them (<#C2|general>, <@U1>, <@&123>, a bare id, or "here" for this
channel): they are completed with this message's platform and workspace.
"""

from __future__ import annotations

import re

from bot import access
from bot.commands import CommandContext, CommandError, command
from bot.messages import Message

USAGE = "Usage: /access show, or /access allow|block|remove channel|user|role <id>"
# <#C123|name>, <#123>, <@U1>, <@!1>, <@&1>, @U1: the id inside.
_PLATFORM_MARKUP = re.compile(r"^<?[#@][!&]?([^|>]+)(?:\|[^>]*)?>?$")


def full_id(message: Message, kind: str, text: str) -> str:
    """An id as typed in chat -> the id the lists keep."""
    if kind == "channel" and text.lower() == "here":
        return message.channel_id
    wanted = access.ID_SHAPES.get(kind, (0, ""))[0]
    if text.count(":") + 1 == wanted:
        return text
    bare = _PLATFORM_MARKUP.sub(r"\1", text)
    if kind == "user":
        return f"{message.platform}:{bare}"
    return f"{message.platform}:{message.workspace}:{bare}"


@command("access", admin=True)
async def _access(context: CommandContext, message: Message, arguments: list[str]) -> str:
    action = arguments[0].lower() if arguments else "show"
    if action == "show" and len(arguments) <= 1:
        return await access.describe(context.store, context.settings)
    if len(arguments) != 3:
        raise CommandError(USAGE)
    kind = arguments[1].lower()
    try:
        target = full_id(message, kind, arguments[2])
        return await access.change(context.store, context.settings, action, kind, target)
    except ValueError as error:
        raise CommandError(f"{error} {USAGE}") from None
