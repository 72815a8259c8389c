"""Slack file objects that an event lists only partly.

Some events carry a file as {"id": ..., "file_access": "check_file_info"} (Slack Connect,
large events): its name, type and url_private come from files.info, asked here once per
such file, in the answer's task (never before Slack's acknowledgement).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


async def complete_files(
    client: AsyncWebClient, files: tuple[Mapping[str, Any], ...]
) -> tuple[Mapping[str, Any], ...]:
    completed = []
    for item in files:
        file_id = item.get("id")
        partial = not (item.get("url_private") or item.get("url_private_download"))
        if partial and isinstance(file_id, str) and file_id:
            item = await _file_info(client, file_id) or item
        completed.append(item)
    return tuple(completed)


async def _file_info(client: AsyncWebClient, file_id: str) -> Mapping[str, Any] | None:
    try:
        response = await client.files_info(file=file_id)
    except (SlackApiError, SlackClientError) as error:
        log.warning("slack: files.info for %s failed: %s", file_id, type(error).__name__)
        return None
    found = response.get("file")
    return found if isinstance(found, Mapping) else None
