"""What reading a file costs: bot.attachments.prepare on typical attachments.

    python bench/attachments_bench.py

Times prepare() (decode, scale, re-encode, extract) for a 12-megapixel photo, a big
PNG screenshot, a 50-page PDF, a DOCX and a 1 MB text file, from memory (no download),
best and median of 7 runs each, with the CPU work on the files' own two threads. Prints
the tokens each costs in a prompt and the bytes the stored copy of an image takes.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.attachments import prepare
from bot.config import Settings
from bot.extract import DOCX
from bot.messages import Attachment, Fetch
from tests.attachment_files import docx_with_text, pdf_pages

RUNS = 7


def _memory(data: bytes) -> Fetch:
    async def fetch(max_bytes: int) -> bytes:
        return data

    return fetch


def _photo() -> bytes:
    # Noise, so JPEG cannot take a shortcut on flat colour.
    image = Image.effect_noise((4000, 3000), 64).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _screenshot() -> bytes:
    image = Image.linear_gradient("L").resize((2880, 1800)).convert("RGBA")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def _time(name: str, data: bytes, mime: str, settings: Settings) -> None:
    attachment = Attachment(name, mime, len(data), _memory(data))
    seconds = []
    prepared = None
    for _ in range(RUNS):
        started = time.perf_counter()
        prepared = await prepare("", (attachment,), "gpt-4o", settings, 1_000_000)
        seconds.append(time.perf_counter() - started)
    assert prepared is not None and not prepared.skipped, prepared and prepared.note
    stored = len(prepared.parts_json_for(prepared.text) or prepared.text)
    print(
        f"{name:<16} {len(data) / 1e6:7.2f} MB  best {min(seconds) * 1000:7.1f} ms"
        f"  median {statistics.median(seconds) * 1000:7.1f} ms"
        f"  {prepared.tokens:6,} tokens  stored {stored / 1000:7.1f} KB"
    )


async def main() -> None:
    settings = Settings()
    cases = [
        ("photo.jpg", _photo(), "image/jpeg"),
        ("screenshot.png", _screenshot(), "image/png"),
        ("report.pdf", pdf_pages(50), "application/pdf"),
        ("memo.docx", docx_with_text("A paragraph of a memo. " * 2000), DOCX),
        ("log.txt", b"2026-12-01 INFO something happened\n" * 30_000, "text/plain"),
    ]
    for name, data, mime in cases:
        await _time(name, data, mime, settings)


if __name__ == "__main__":
    asyncio.run(main())
