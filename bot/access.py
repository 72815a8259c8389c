"""Who Parley answers where: allow and block lists for users, channels and roles.

The lists are what `[access]` in the config file sets plus what admins add with
/access or `python -m bot access` (kept in the database). Both are read for every
message, so a change made in one process applies to the next message in all of them;
the database part is one small query (bench/access_bench.py measures it).

Rules, in order; admins (admins.users, trusted platform admins) pass them all:
1. a direct message, when access.dms is off: refused;
2. a blocked user, a user with a blocked role, or a blocked channel: refused. A channel
   entry also covers its threads (their parent) and, on Discord, a category covers its
   channels;
3. allow lists: a user must be listed, or have a listed role; a channel must be listed
   (or its parent or category). An allow list restricts only the platforms it names
   an entry of: allowing two Slack channels does not shut the web chat or Discord.
Direct messages are not channels: the channel lists do not apply to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot.config import Settings
from bot.messages import Message, ReplyEvent, ReplyKind
from bot.metrics import Metrics
from bot.store import Store

log = logging.getLogger(__name__)

KINDS = ("user", "channel", "role")
LISTS = ("allow", "block")
# How many ":"-separated parts each kind of id has, and an example.
ID_SHAPES = {
    "user": (2, "slack:U123"),
    "channel": (3, "slack:T0123:C0456"),
    "role": (3, "discord:<guild>:<role>"),
}
NOT_FOR_YOU = "Sorry, I am not available to you here. Ask an admin if this is a mistake."
NOT_HERE = "Sorry, I do not answer in this channel. An admin can change that with /access."
NO_DMS = "Sorry, I do not answer direct messages. Mention me in a channel instead."


@dataclass(frozen=True, slots=True)
class Lists:
    """The allow and block lists in force: config and database together."""

    allow: dict[str, frozenset[str]]
    block: dict[str, frozenset[str]]

    @classmethod
    def build(cls, settings: Settings, entries: Iterable[tuple[str, str, str]]) -> Lists:
        allow = {kind: set(configured(settings, "allow", kind)) for kind in KINDS}
        block = {kind: set(configured(settings, "block", kind)) for kind in KINDS}
        for list_name, kind, target in entries:
            (allow if list_name == "allow" else block).setdefault(kind, set()).add(target)
        return cls(
            {kind: frozenset(ids) for kind, ids in allow.items()},
            {kind: frozenset(ids) for kind, ids in block.items()},
        )


@dataclass(frozen=True, slots=True)
class Denial:
    reason: str  # the metric label: dms, user, role, channel
    text: str
    # Who the refusal is about, for saying it once: the channel, or a user in it.
    subject: str


def configured(settings: Settings, list_name: str, kind: str) -> tuple[str, ...]:
    ids: tuple[str, ...] = getattr(settings, f"access_{list_name}_{kind}s")
    return ids


def _platforms(ids: Iterable[str]) -> set[str]:
    return {entry.split(":", 1)[0] for entry in ids}


def _places(message: Message) -> set[str]:
    """The channel, a thread's parent channel and the channel's category, as ids."""
    prefix = f"{message.platform}:{message.workspace}:"
    extra = (message.parent_channel, message.category)
    return {message.channel_id, *(prefix + ident for ident in extra if ident)}


def judge(lists: Lists, settings: Settings, message: Message) -> Denial | None:
    """Why this (non-admin) message must not be answered, or None."""
    user = message.user_key
    roles = {f"{message.platform}:{message.workspace}:{role}" for role in message.roles}
    places = set() if message.is_direct else _places(message)
    if message.is_direct and not settings.access_dms:
        return Denial("dms", NO_DMS, "dm:" + user)
    if user in lists.block["user"]:
        return Denial("user", NOT_FOR_YOU, user)
    if roles & lists.block["role"]:
        return Denial("role", NOT_FOR_YOU, user)
    if places & lists.block["channel"]:
        return Denial("channel", NOT_HERE, "channel")
    people = lists.allow["user"] | lists.allow["role"]
    if message.platform in _platforms(people) and not (
        user in lists.allow["user"] or roles & lists.allow["role"]
    ):
        return Denial("user", NOT_FOR_YOU, user)
    channels = lists.allow["channel"]
    if places and message.platform in _platforms(channels) and not places & channels:
        return Denial("channel", NOT_HERE, "channel")
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    notice: ReplyEvent | None = None  # what to say when refused (once), if anything


ALLOWED = Verdict(True)


class AccessControl:
    def __init__(
        self,
        store: Store,
        settings: Callable[[], Settings],
        is_admin: Callable[[Settings, Message], bool],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.settings = settings  # a getter: live settings change under us
        self.is_admin = is_admin
        self.metrics = metrics
        # The lists last built, by the settings and database version they came from.
        self._built: tuple[Settings, tuple[int, float], Lists] | None = None

    async def lists(self, settings: Settings) -> Lists:
        """The lists in force: one small query per message, the entries re-read only
        when the database's version of them changed (in any process)."""
        version = await self.store.access_version()
        built = self._built
        if built is not None and built[0] is settings and built[1] == version:
            return built[2]
        lists = Lists.build(settings, await self.store.access_entries())
        self._built = (settings, version, lists)
        return lists

    async def check(self, message: Message) -> Verdict:
        settings = self.settings()
        if self.is_admin(settings, message):
            return ALLOWED
        denial = judge(await self.lists(settings), settings, message)
        if denial is None:
            return ALLOWED
        self.metrics.access_refusals.labels(denial.reason).inc()
        log.debug("access: not answering %s in %s (%s)", message.user_key,
                 message.channel_id, denial.reason)  # fmt: skip
        if settings.access_refusal == "silent":
            return Verdict(False)
        key = f"{message.channel_id}|{denial.subject}"
        if not await self.store.claim_access_notice(key):
            return Verdict(False)
        # About one person: shown to them alone where the platform can.
        private = denial.reason in ("user", "role", "dms")
        return Verdict(False, ReplyEvent(ReplyKind.ERROR, denial.text, private=private))


def parse_target(kind: str, text: str) -> str:
    """Check an id's shape for its kind; raises ValueError saying what is expected."""
    if kind not in ID_SHAPES:
        raise ValueError(f"Unknown kind {kind!r}: use channel, user or role.")
    parts, example = ID_SHAPES[kind]
    pieces = text.split(":")
    if len(pieces) != parts or not all(pieces):
        raise ValueError(f"A {kind} id looks like {example}, not {text!r}.")
    if kind == "role" and pieces[0] != "discord":
        raise ValueError(f"Roles are Discord's: discord:<guild>:<role>, not {text!r}.")
    return text


async def describe(store: Store, settings: Settings) -> str:
    """Every list, config entries marked as such (only the file can remove them)."""
    stored = await store.access_entries()
    lines = [
        f"Direct messages: {'answered' if settings.access_dms else 'refused'}; "
        f"refusals: {settings.access_refusal}"
    ]
    for list_name in LISTS:
        for kind in KINDS:
            from_config = [f"{i} (config)" for i in configured(settings, list_name, kind)]
            from_db = [t for lst, k, t in stored if lst == list_name and k == kind]
            shown = ", ".join([*from_config, *from_db])
            if shown:
                lines.append(f"{list_name} {kind}s: {shown}")
    if len(lines) == 1:
        lines.append("No allow or block lists: everyone may use Parley everywhere.")
    return "\n".join(lines)


async def change(store: Store, settings: Settings, action: str, kind: str, target: str) -> str:
    """allow|block|remove one id; the answer /access and the CLI print."""
    target = parse_target(kind, target)
    if action in LISTS:
        await store.set_access(action, kind, target)
        return f"Done: {kind} {target} is on the {action} list."
    if action != "remove":
        raise ValueError(f"Unknown action {action!r}: use show, allow, block or remove.")
    if await store.remove_access(kind, target):
        return f"Done: {kind} {target} is on no list now."
    if any(target in configured(settings, lst, kind) for lst in LISTS):
        return f"{kind} {target} is listed in the config file; remove it there."
    return f"{kind} {target} was on no list."
