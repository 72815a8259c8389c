"""Files sent with a message, turned into what the model reads.

Images become image content parts (scaled down, re-encoded) when the model sees
images; text files, PDFs and DOCX files are inlined as text with their names. What
cannot be used (too large, an unsupported type, a failed download, unreadable) is
named in one short note to the user, and the rest of the message is still answered.

History keeps exactly what the model saw: the stored user message's content is the
user's text with the files' text inlined (so search finds it), and when there are
images the whole list of content parts, images included as data: URLs of the scaled
copy, is stored beside it. A follow-up about a picture therefore works after a
restart, and never downloads anything again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.config import Settings
from bot.extract import Unreadable, decode_text, docx_text, kind_of, pdf_text, prepare_image
from bot.messages import Attachment
from bot.tokens import count_message
from bot.vision import image_tokens, sees_images

log = logging.getLogger(__name__)

# Decoding images and PDFs is CPU work: a small pool of its own, so a burst of files
# never parks the default executor's threads (aiohttp resolves DNS there).
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parley-files")
NO_VISION = "this model cannot see images"
# A file text is not cut below this many characters to make room: past that, the
# message is refused as too long for the model's context instead.
MIN_CUT_CHARS = 200
R = TypeVar("R")


async def off_loop(function: Callable[..., R], *args: Any) -> R:
    """Run CPU work (decoding files, parsing pages) on the files' own threads."""
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, function, *args)


class FetchError(Exception):
    """A download that did not work; the message is the reason shown to the user."""


@dataclass(slots=True)
class Prepared:
    """A message with its files, as the model will see it."""

    text: str  # the user's text, then each readable file's text under its name
    parts: list[dict[str, Any]] = field(default_factory=list)  # set only with images
    image_tokens: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    # (kind, "used" or "skipped") per file, for the metrics: kind is image, text, pdf,
    # docx or other, so the label values stay few.
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """What the stored user message costs in a prompt."""
        return count_message(self.text) + self.image_tokens

    def parts_json_for(self, text: str) -> str:
        """The content parts as history keeps them, with `text` (the stored, perhaps
        redacted, text) for their text part; "" without images."""
        if not self.parts:
            return ""
        return json.dumps([{"type": "text", "text": text}, *self.parts[1:]])

    @property
    def note(self) -> str:
        """One short line naming every skipped file and why ("" if none)."""
        if not self.skipped:
            return ""
        listed = "; ".join(f"{name} ({why})" for name, why in self.skipped)
        return f"I could not use {_files(len(self.skipped))}: {listed}."


def _files(count: int) -> str:
    return "this file" if count == 1 else f"these {count} files"


async def prepare(
    text: str, attachments: tuple[Attachment, ...], model: str, settings: Settings,
    budget: int,
) -> Prepared:  # fmt: skip
    """Fetch and read each attachment, bounded by [attachments]; file texts are cut
    further, longest first, until the message fits `budget` prompt tokens."""
    prepared = Prepared(text)
    if not attachments:
        return prepared
    vision = sees_images(model, settings.vision)
    files: list[_Read] = []
    images: list[dict[str, Any]] = []
    for index, attachment in enumerate(attachments):
        name = _shown_name(attachment.name)
        kind = kind_of(attachment.name, attachment.mime_type) or "other"
        try:
            if index >= settings.attachment_max_files:
                raise Unreadable(f"only {settings.attachment_max_files} files a message")
            read = await _read(attachment, vision, settings)
        except (FetchError, Unreadable) as error:
            prepared.skipped.append((name, str(error)))
            prepared.outcomes.append((kind, "skipped"))
            continue
        prepared.outcomes.append((kind, "used"))
        if isinstance(read, str):
            files.append(_Read(name, read))
            continue
        detail = settings.image_detail
        images.append({"type": "image_url", "image_url": {"url": read.data_url, "detail": detail}})
        prepared.image_tokens += image_tokens(read.width, read.height, detail)
        files.append(_Read(name, None))
    if prepared.skipped:
        log.info("files skipped: %s", prepared.note)
    prepared.text = _compose(text, files)
    while prepared.tokens > budget and _cut_longest(files):
        prepared.text = _compose(text, files)
    if images:
        prepared.parts = [{"type": "text", "text": prepared.text}, *images]
    return prepared


@dataclass(slots=True)
class _Read:
    name: str
    text: str | None  # None: an image
    cut: bool = False  # shortened to fit the model's context


def _compose(text: str, files: list[_Read]) -> str:
    blocks = [text.strip()]
    for file in files:
        if file.text is None:
            blocks.append(f"[image: {file.name}]")
        else:
            cut = "\n[… cut to fit the model's context]" if file.cut else ""
            blocks.append(f'<file name="{file.name}">\n{file.text}{cut}\n</file>')
    return "\n\n".join(block for block in blocks if block)


def _cut_longest(files: list[_Read]) -> bool:
    """Halve the longest file text; False when none is long enough to bother."""
    texts = [file for file in files if file.text is not None and len(file.text) > MIN_CUT_CHARS]
    if not texts:
        return False
    longest = max(texts, key=lambda file: len(file.text or ""))
    longest.text = (longest.text or "")[: len(longest.text or "") // 2]
    longest.cut = True
    return True


async def _read(attachment: Attachment, vision: bool, settings: Settings) -> Any:
    """The file's text, or a PreparedImage; raises FetchError or Unreadable."""
    if attachment.fetch is None:  # restored after a restart, or the platform hid it
        raise FetchError("no longer available to download")
    kind = kind_of(attachment.name, attachment.mime_type)
    if not kind:
        raise Unreadable(f"unsupported type {attachment.mime_type or 'unknown'}")
    if kind == "image" and not vision:
        raise Unreadable(NO_VISION)
    limit = settings.attachment_max_bytes
    if attachment.size > limit:
        raise FetchError(too_large(attachment.size, limit))
    try:
        async with asyncio.timeout(settings.attachment_timeout_seconds):
            data = await attachment.fetch(limit)
    except TimeoutError:
        raise FetchError("download timed out") from None
    try:
        async with asyncio.timeout(settings.attachment_timeout_seconds):
            return await _extract(kind, data, settings)
    except TimeoutError:
        # The worker thread cannot be stopped; the user is not kept waiting for it.
        raise Unreadable("it took too long to read") from None


async def _extract(kind: str, data: bytes, settings: Settings) -> Any:
    chars = settings.attachment_max_text_chars
    if kind == "image":
        return await off_loop(prepare_image, data, settings.image_max_side)
    if kind == "pdf":
        text = await off_loop(pdf_text, data, chars)
    elif kind == "docx":
        text = await off_loop(docx_text, data)
    else:
        text = decode_text(data)
    return _capped(text, chars)


def _capped(text: str, max_chars: int) -> str:
    text = text.strip()
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[… cut at {max_chars:,} characters]"


_BLOCK = re.compile(
    r'(?:^|\n\n)(?:<file name="([^"\n]*)">\n.*?\n</file>|\[image: ([^\]\n]*)\])(?=\n\n|$)', re.S
)


def shown_text(content: str) -> str:
    """A stored user message as a chat shows it again: the user's own words, then the
    names of the files the model read with it (not their text)."""
    blocks = list(_BLOCK.finditer(content))
    start, names = len(content), list[str]()
    for block in reversed(blocks):  # the files are the blocks that end the message
        if block.end() != start:
            break
        start = block.start()
        names.insert(0, block[1] if block[1] is not None else block[2])
    if not names:
        return content
    return (content[:start] + "\n📎 " + ", ".join(names)).strip()


def too_large(size: int, limit: int) -> str:
    """The reason for a file over the limit; adapters' fetches raise it too."""
    shown = f"{_amount(size)}, " if size else ""
    return f"too large: {shown}the limit is {_amount(limit)}"


def _amount(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def _shown_name(name: str) -> str:
    # A file name goes into the prompt and a note: one short line, no markup breakouts.
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '<>"`')
    return (cleaned.strip() or "file")[:120]
