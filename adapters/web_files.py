"""Files in the web chat: the page uploads each one (POST /upload, multipart, from the
button or a drop) and names their ids in its next message frame.

Uploads wait in memory for the message that uses them, per browser session: bounded
in size per file ([attachments] max_file_bytes), in total (UPLOADS_MAX_BYTES, oldest
dropped first) and in age. A message can only use its own session's uploads.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from bot.attachments import FetchError, too_large
from bot.messages import Attachment, Fetch

UPLOADS_MAX_BYTES = 64_000_000
UPLOAD_MAX_AGE_SECONDS = 3600.0
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    owner: str  # the session identity that uploaded it
    name: str
    mime_type: str
    data: bytes
    at: float


class Uploads:
    """Uploaded files waiting for their message, oldest first."""

    def __init__(self, max_bytes: int = UPLOADS_MAX_BYTES) -> None:
        self._files: OrderedDict[str, Upload] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes

    def add(self, upload: Upload) -> str:
        self._expire(time.monotonic())
        upload_id = secrets.token_urlsafe(12)
        self._files[upload_id] = upload
        self._bytes += len(upload.data)
        while self._bytes > self.max_bytes and self._files:
            self._drop(next(iter(self._files)))
        return upload_id

    def attachments(self, owner: str, ids: Sequence[str]) -> tuple[Attachment, ...]:
        """The owner's uploads by id (unknown ones, or another session's, are left out)."""
        found = []
        for upload_id in ids:
            upload = self._files.get(upload_id)
            if upload is not None and upload.owner == owner:
                size = len(upload.data)
                fetch = self._take(upload_id)
                found.append(Attachment(upload.name, upload.mime_type, size, fetch))
        return tuple(found)

    def _take(self, upload_id: str) -> Fetch:
        async def fetch(max_bytes: int) -> bytes:
            upload = self._drop(upload_id)  # read once: the history keeps what was used
            if upload is None:
                raise FetchError("no longer available; upload it again")
            if len(upload.data) > max_bytes:
                raise FetchError(too_large(len(upload.data), max_bytes))
            return upload.data

        return fetch

    def _drop(self, upload_id: str) -> Upload | None:
        upload = self._files.pop(upload_id, None)
        if upload is not None:
            self._bytes -= len(upload.data)
        return upload

    def _expire(self, now: float) -> None:
        while self._files:
            oldest_id, oldest = next(iter(self._files.items()))
            if now - oldest.at < UPLOAD_MAX_AGE_SECONDS:
                return
            self._drop(oldest_id)


async def receive_upload(
    request: web.Request, owner: str, max_bytes: int, seconds: float
) -> Upload:
    """The one file of a multipart POST, read up to max_bytes within `seconds` (the
    guard leaves this body to the handler); HTTPException otherwise."""
    try:
        async with asyncio.timeout(seconds):
            return await _read_upload(request, owner, max_bytes)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="The upload took too long.") from None
    except ValueError:  # not multipart, or a broken one
        raise web.HTTPBadRequest(text="Send one file, as the multipart field 'file'.") from None


async def _read_upload(request: web.Request, owner: str, max_bytes: int) -> Upload:
    reader = await request.multipart()
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "file":
        raise web.HTTPBadRequest(text="Send one file, as the multipart field 'file'.")
    name = part.filename or "file"
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > max_bytes:
            why = f"{name} is {too_large(0, max_bytes)}."
            raise web.HTTPRequestEntityTooLarge(max_bytes, len(data), text=why)
    mime_type = part.headers.get("Content-Type", "")
    return Upload(owner, name, mime_type, bytes(data), time.monotonic())
