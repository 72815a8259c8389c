"""/attach PATH in the terminal chat: local files go with the next message."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from bot.attachments import FetchError, off_loop, too_large
from bot.messages import Attachment, Fetch

ATTACH = "/attach"


def is_attach(line: str) -> bool:
    return line == ATTACH or line.startswith(ATTACH + " ")


def attach(line: str) -> tuple[Attachment | None, str]:
    """(the file named after /attach, what to tell the user) or (None, the problem)."""
    raw = line[len(ATTACH) :].strip().strip("'\"")
    if not raw:
        return None, "Say which file: /attach PATH (it goes with your next message)."
    path = Path(raw).expanduser()
    if not path.is_file():
        return None, f"There is no file at {path}."
    size = path.stat().st_size
    mime_type = mimetypes.guess_type(path.name)[0] or ""
    attachment = Attachment(path.name, mime_type, size, _reader(path))
    return attachment, f"Attached {path.name}: it goes with your next message."


def _reader(path: Path) -> Fetch:
    def read(max_bytes: int) -> bytes:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise FetchError(too_large(0, max_bytes))
        return data

    async def fetch(max_bytes: int) -> bytes:
        try:
            return await off_loop(read, max_bytes)
        except OSError as error:
            raise FetchError(f"could not be read ({error.strerror or error})") from None

    return fetch
