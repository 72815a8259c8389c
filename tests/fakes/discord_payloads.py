"""Discord's wire payloads for the fake Discord: TypedDicts and the builders that fill them.

As in discord.py's own discord/types, raw payloads are TypedDicts, kept apart from the
fake's own dataclasses. The ids name one test guild with a text channel, a role with
Manage Server, and three members: a plain one, a manager and the owner. Requests come
the other way as JSON, or as multipart/form-data (payload_json and files[n]) when a
message carries files; `read_body` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, TypeAlias, TypedDict

from aiohttp import BodyPartReader, web

JSON: TypeAlias = dict[str, Any]
DISCORD_EPOCH_MS = 1_420_070_400_000

BOT_ID = 900_000_000_000_000_001
APP_ID = BOT_ID  # Discord gives a bot the same id as its application
GUILD_ID = 800_000_000_000_000_001
OTHER_GUILD_ID = 800_000_000_000_000_002
CHANNEL_ID = 800_000_000_000_000_010
MANAGER_ROLE_ID = 800_000_000_000_000_020
BOT_ROLE_ID = 800_000_000_000_000_021
ALICE_ID = 700_000_000_000_000_001  # a plain member
ADA_ID = 700_000_000_000_000_002  # has Manage Server through a role
OWNER_ID = 700_000_000_000_000_003
DM_CHANNEL_ID = 600_000_000_000_000_001

MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16)  # view, send, read history
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 14) | (1 << 15) | (1 << 35) | (1 << 38)
EPHEMERAL = 1 << 6
LOADING = 1 << 7
NAMES = {BOT_ID: "Parley", ALICE_ID: "alice", ADA_ID: "ada", OWNER_ID: "owner"}


class UserPayload(TypedDict):
    id: str
    username: str
    discriminator: str
    global_name: str | None
    avatar: str | None
    bot: bool
    public_flags: int


class MemberPayload(TypedDict):
    roles: list[str]
    joined_at: str
    deaf: bool
    mute: bool
    flags: int
    pending: bool
    nick: str | None
    avatar: str | None
    communication_disabled_until: str | None
    user: NotRequired[UserPayload]
    permissions: NotRequired[str]


class AttachmentPayload(TypedDict):
    id: str
    filename: str
    size: int
    url: str
    proxy_url: str
    content_type: NotRequired[str]


class MessagePayload(TypedDict):
    id: str
    channel_id: str
    author: UserPayload
    content: str
    timestamp: str
    edited_timestamp: str | None
    tts: bool
    mention_everyone: bool
    mentions: list[JSON]
    mention_roles: list[str]
    attachments: list[AttachmentPayload]
    embeds: list[JSON]
    pinned: bool
    type: int
    flags: int
    components: list[JSON]
    guild_id: NotRequired[str]
    member: NotRequired[MemberPayload]
    message_reference: NotRequired[JSON]
    referenced_message: NotRequired[JSON]
    webhook_id: NotRequired[str]
    application_id: NotRequired[str]


class InteractionPayload(TypedDict):
    id: str
    application_id: str
    type: int
    token: str
    version: int
    channel_id: str
    channel: JSON
    data: JSON
    locale: str
    app_permissions: str
    entitlements: list[JSON]
    authorizing_integration_owners: JSON
    context: int
    attachment_size_limit: int
    guild_id: NotRequired[str]
    guild_locale: NotRequired[str]
    member: NotRequired[MemberPayload]
    user: NotRequired[UserPayload]


def now() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int) -> UserPayload:
    name = NAMES.get(user_id, f"user{user_id}")
    return {
        "id": str(user_id), "username": name, "discriminator": "0", "global_name": name,
        "avatar": None, "bot": user_id == BOT_ID, "public_flags": 0,
    }  # fmt: skip


def member(user_id: int, *, with_user: bool = True) -> MemberPayload:
    roles = {ADA_ID: [str(MANAGER_ROLE_ID)], BOT_ID: [str(BOT_ROLE_ID)]}.get(user_id, [])
    payload: MemberPayload = {
        "roles": roles, "joined_at": now(), "deaf": False, "mute": False, "flags": 0,
        "pending": False, "nick": None, "avatar": None, "communication_disabled_until": None,
    }  # fmt: skip
    if with_user:
        payload["user"] = user(user_id)
    return payload


def _role(role_id: int, name: str, permissions: int, position: int, managed: bool) -> JSON:
    return {
        "id": str(role_id), "name": name, "permissions": str(permissions), "position": position,
        "color": 0, "hoist": False, "managed": managed, "mentionable": False, "flags": 0,
        "icon": None, "unicode_emoji": None,
    }  # fmt: skip


def text_channel(channel_id: int, guild_id: int, name: str = "general") -> JSON:
    return {
        "id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name,
        "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None,
        "topic": None, "rate_limit_per_user": 0, "last_message_id": None, "flags": 0,
    }  # fmt: skip


def thread_channel(
    thread_id: int, parent_id: int, guild_id: int, name: str, owner_id: int = BOT_ID,
    *, private: bool = False,
) -> JSON:  # fmt: skip
    """A thread: type 11 (public) or 12 (private: only its members see it)."""
    metadata: JSON = {
        "archived": False, "auto_archive_duration": 1440, "archive_timestamp": now(),
        "locked": False, "create_timestamp": now(),
    }  # fmt: skip
    if private:
        metadata["invitable"] = True
    return {
        "id": str(thread_id), "type": 12 if private else 11, "guild_id": str(guild_id),
        "parent_id": str(parent_id), "owner_id": str(owner_id), "name": name,
        "last_message_id": None, "message_count": 0, "member_count": 1,
        "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
        "thread_metadata": metadata,
    }  # fmt: skip


def guild(guild_id: int, channel_id: int) -> JSON:
    everyone = _role(guild_id, "@everyone", EVERYONE_PERMISSIONS, 0, False)
    return {
        "id": str(guild_id), "name": f"guild {guild_id}", "owner_id": str(OWNER_ID),
        "icon": None, "unavailable": False, "member_count": 4, "large": False,
        "features": [], "emojis": [], "stickers": [], "voice_states": [], "presences": [],
        "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        "threads": [], "joined_at": now(), "preferred_locale": "en-US",
        "roles": [
            everyone,
            _role(MANAGER_ROLE_ID, "Managers", MANAGE_GUILD, 1, False),
            _role(BOT_ROLE_ID, "Parley", BOT_PERMISSIONS, 2, True),
        ],
        "channels": [text_channel(channel_id, guild_id)],
        "members": [member(uid) for uid in (BOT_ID, ALICE_ID, ADA_ID, OWNER_ID)],
    }  # fmt: skip


def message_payload(
    message_id: int, channel_id: int, guild_id: int | None, author: UserPayload, content: str
) -> MessagePayload:
    payload: MessagePayload = {
        "id": str(message_id), "channel_id": str(channel_id), "author": author,
        "content": content, "timestamp": now(), "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": False, "type": 0, "flags": 0, "components": [],
    }  # fmt: skip
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    return payload


def bot_message(
    message_id: int, channel_id: int, guild_id: int | None, content: str = ""
) -> MessagePayload:
    """A message the bot made: posted, a followup, or an interaction's response."""
    return message_payload(message_id, channel_id, guild_id, user(BOT_ID), content)


def attachment_payload(
    attachment_id: int, filename: str, size: int, content_type: str
) -> AttachmentPayload:
    url = f"https://cdn.discordapp.test/attachments/{attachment_id}/{filename}"
    return {
        "id": str(attachment_id), "filename": filename, "size": size, "url": url,
        "proxy_url": url, "content_type": content_type,
    }  # fmt: skip


def option_type(value: Any) -> int:
    """Discord's application command option type for a Python value."""
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return 5
    if isinstance(value, int):
        return 4
    return 10 if isinstance(value, float) else 3


def interaction_payload(
    interaction_id: int, command_id: int, token: str, name: str, options: dict[str, Any],
    *, user_id: int, channel: JSON, guild_id: int,
) -> InteractionPayload:  # fmt: skip
    """A slash command invocation by a guild member, as INTERACTION_CREATE carries it."""
    options_payload = [
        {"name": key, "type": option_type(value), "value": value} for key, value in options.items()
    ]
    return {
        "id": str(interaction_id), "application_id": str(APP_ID), "type": 2, "token": token,
        "version": 1, "channel_id": str(channel["id"]), "channel": channel,
        "data": {"id": str(command_id), "name": name, "type": 1,
                 "options": options_payload, "guild_id": str(guild_id)},
        "locale": "en-US", "guild_locale": "en-US", "guild_id": str(guild_id),
        "app_permissions": str(BOT_PERMISSIONS), "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)}, "context": 0,
        "attachment_size_limit": 10 * 1024 * 1024,
        "member": {**member(user_id), "permissions": str(permissions_of(user_id))},
    }  # fmt: skip


def permissions_of(user_id: int) -> int:
    return EVERYONE_PERMISSIONS | (MANAGE_GUILD if user_id in (ADA_ID, OWNER_ID) else 0)


def me() -> JSON:
    """GET /users/@me: the bot user."""
    return {**user(BOT_ID), "verified": True, "mfa_enabled": False, "flags": 0}


def application() -> JSON:
    return {
        "id": str(APP_ID), "name": "Parley", "icon": None, "description": "",
        "rpc_origins": [], "bot_public": True, "bot_require_code_grant": False,
        "owner": user(OWNER_ID), "summary": "", "verify_key": "0" * 64, "flags": 0,
        "bot": user(BOT_ID), "team": None,
    }  # fmt: skip


def ready(session_id: str, resume_url: str, guild_ids: Sequence[int], shard: Any) -> JSON:
    """The READY dispatch: every guild unavailable until its GUILD_CREATE."""
    return {
        "v": 10, "user": me(), "session_id": session_id, "resume_gateway_url": resume_url,
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "shard": shard, "application": {"id": str(APP_ID), "flags": 0},
        "private_channels": [], "relationships": [], "presences": [],
    }  # fmt: skip


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request, as it arrived."""

    field: str  # files[0], files[1], ...
    filename: str
    content_type: str
    data: bytes


async def read_body(request: web.Request) -> tuple[Any, tuple[UploadedFile, ...]]:
    """The JSON body; for multipart (file uploads), payload_json and the files[n] parts."""
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    data = await request.read()
    return (json.loads(data) if data else None), ()


async def _read_multipart(request: web.Request) -> tuple[JSON, tuple[UploadedFile, ...]]:
    body: JSON = {}
    files: list[UploadedFile] = []
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: Discord takes none
        if part.name == "payload_json":
            body = json.loads(await part.text())
        elif part.name and part.name.startswith("files["):
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            upload = UploadedFile(part.name, part.filename or "", content_type, await part.read())
            files.append(upload)
    return body, tuple(files)
