"""Attachments in the engine and the store: budgets, vision, history, recovery.

The platform downloads are tested over real sockets in test_attachments_slack.py,
test_attachments_discord.py and test_web_attachments.py; here a file's bytes come from
memory, since no protocol is involved.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from yarl import URL

from adapters.files import discord_host_check, slack_host_check
from bot import extract
from bot.attachments import shown_text
from bot.config import ConfigError, load_settings
from bot.extract import DOCX
from bot.messages import Attachment, ConversationKey, Fetch, Message
from bot.store import Store
from bot.store.records import UserLimits
from bot.vision import content_tokens, image_tokens, sees_images
from tests.attachment_files import docx_with_text, image_parts, pdf_with_text, png, user_text
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI


def in_memory(data: bytes) -> Fetch:
    async def fetch(max_bytes: int) -> bytes:
        return data[: max_bytes + 1]

    return fetch


def attached(name: str, data: bytes, mime: str) -> Attachment:
    return Attachment(name, mime, len(data), in_memory(data))


@pytest.mark.parametrize(
    ("model", "sees"),
    [
        ("gpt-4o-mini", True), ("gpt-4.1-nano", True), ("openai/gpt-5", True), ("o3", True),
        ("claude-3-5-haiku-latest", True), ("gemini-2.0-flash", True),
        ("llama3.2-vision:11b", True), ("qwen2.5-vl-7b-instruct", True), ("llava:13b", True),
        ("gpt-3.5-turbo", False), ("o3-mini", False), ("mistral:7b", False),
        ("llama3.1:8b", False), ("gpt-4o-audio-preview", False),
    ],
)  # fmt: skip
def test_vision_auto_goes_by_the_model_name(model: str, sees: bool) -> None:
    assert sees_images(model, "auto") is sees
    assert sees_images(model, "true") and not sees_images(model, "false")


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((1024, 1024), "high", 765), ((2048, 4096), "high", 1105), ((4096, 8192), "auto", 1105),
     ((512, 512), "high", 255), ((4000, 3000), "low", 85)],
)  # fmt: skip
def test_image_tokens_follow_openais_rule(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail) == tokens


async def test_a_long_file_is_cut_to_fit_the_context(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(context_tokens=3000, reply_tokens=500)
    words = " ".join(f"word{n}" for n in range(8000)).encode()
    events = await collect(
        engine, message("summarise", attachments=(attached("long.txt", words, "text/plain"),))
    )
    assert final_text(events).startswith("echo: summarise")
    text = user_text(fake_openai.requests[-1])
    assert text.startswith('summarise\n\n<file name="long.txt">\nword0 word1')
    assert text.endswith("\n[… cut to fit the model's context]\n</file>")
    assert "word7999" not in text


async def test_too_many_files_and_a_slow_download_are_named(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(attachment_max_files=2, attachment_timeout_seconds=0.2)

    async def never(max_bytes: int) -> bytes:
        await asyncio.Event().wait()
        return b""

    files = (
        Attachment("stuck.txt", "text/plain", 10, never),
        attached("a.txt", b"alpha", "text/plain"),
        attached("b.txt", b"beta", "text/plain"),
    )
    events = await collect(engine, message("go", attachments=files))
    notes = [e.text for e in events if e.kind.value == "notice"]
    assert notes == [
        "I could not use these 2 files: stuck.txt (download timed out); "
        "b.txt (only 2 files a message)."
    ]
    assert user_text(fake_openai.requests[-1]) == 'go\n\n<file name="a.txt">\nalpha\n</file>'


async def test_files_only_and_none_usable_is_a_clear_error_without_a_model_call(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    events = await collect(
        engine, message("", attachments=(attached("clip.mp4", b"\x00\x00", "video/mp4"),))
    )
    assert final_text(events) == "I could not use this file: clip.mp4 (unsupported type video/mp4)."
    assert fake_openai.request_count == 0


async def test_a_model_without_vision_gets_history_images_as_their_names(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    picture = attached("cat.png", png(), "image/png")
    await collect(engine, message("look", attachments=(picture,)))
    assert image_parts(fake_openai.requests[-1])
    await engine.store.set_channel_setting("test", "w1", "c1", "model", "gpt-3.5-turbo")
    await collect(engine, message("what was it?"))
    first_user = next(m for m in fake_openai.requests[-1]["messages"] if m["role"] == "user")
    assert first_user["content"] == "look\n\n[image: cat.png]"


def test_a_claimed_message_keeps_its_files_names_for_recovery() -> None:
    original = message("see", attachments=(attached("a.pdf", b"%PDF", "application/pdf"),))
    restored = Message.from_payload(original.to_payload())
    assert restored.attachments == (Attachment("a.pdf", "application/pdf", 4),)
    assert restored.attachments[0].fetch is None  # a fetch does not outlive its process


async def test_recovered_files_are_named_as_unavailable(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine()
    lost = Message.from_payload(
        message("and this?", attachments=(attached("a.txt", b"x", "text/plain"),)).to_payload()
    )
    events = await collect(engine, lost)
    notes = [e.text for e in events if e.kind.value == "notice"]
    assert notes == ["I could not use this file: a.txt (no longer available to download)."]
    assert final_text(events) == "echo: and this?"


async def test_the_store_keeps_content_parts(store: Store) -> None:
    key = ConversationKey("test", "w", "c")
    parts = [{"type": "text", "text": "look\n\n[image: x.png]"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]  # fmt: skip
    verdict = await store.admit_message(
        key, "test:u", UserLimits(), 1000.0, "look\n\n[image: x.png]", 800, parts=json.dumps(parts)
    )
    assert not verdict.refused
    await store.admit_message(key, "test:u", UserLimits(), 1001.0, "plain", 3)
    stored = (await store.recent(key, 10)).messages
    assert [m.as_chat() for m in stored] == [
        {"role": "user", "content": parts},
        {"role": "user", "content": "plain"},
    ]
    assert stored[0].as_chat(images=False)["content"] == "look\n\n[image: x.png]"
    assert stored[0].tokens == 800


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[model]\nvision = "maybe"', 'model.vision must be "auto", true or false'),
        ('[attachments]\nimage_detail = "ultra"', "attachments.image_detail must be"),
        ("[tools.fetch]\nallow_hosts = 5", "tools.fetch must be a [tools.fetch] table"),
        ('[tools.fetch]\nallow = ["x"]', "tools.fetch must be a [tools.fetch] table"),
        ("[tools.fetch]\nmax_bytes = 0", "tools.fetch must be a [tools.fetch] table"),
    ],
)
def test_bad_attachment_and_fetch_settings_name_the_setting(
    tmp_path: Path, toml: str, problem: str
) -> None:
    path = tmp_path / "parley.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_settings(str(path), environ={})


def test_vision_and_fetch_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "parley.toml"
    path.write_text('[model]\nvision = false\n[tools.fetch]\nallow_hosts = ["Docs.Python.org"]\n')
    settings = load_settings(str(path), environ={})
    assert settings.vision == "false"
    assert settings.fetch.allow_hosts == ("docs.python.org",)


async def test_unreadable_files_are_named_with_the_reason(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extract, "MAX_UNPACKED_BYTES", 10_000)
    engine = make_engine()
    files = (
        attached("broken.pdf", b"%PDF-1.4 nonsense", "application/pdf"),
        attached("fake.png", b"not an image at all", "image/png"),
        attached("bomb.docx", docx_with_text("x" * 20_000), DOCX),
        attached("scan.pdf", pdf_with_text(""), "application/pdf"),
    )
    events = await collect(engine, message("read", attachments=files))
    assert [e.text for e in events if e.kind.value == "notice"] == [
        "I could not use these 4 files: broken.pdf (not a readable PDF); "
        "fake.png (not a readable image); bomb.docx (the document is too large once "
        "unpacked); scan.pdf (the PDF has no text (a scan?))."
    ]
    assert final_text(events) == "echo: read"


def test_a_big_transparent_image_is_stored_as_a_bounded_jpeg() -> None:
    noise = Image.effect_noise((1024, 1024), 100).convert("RGBA")
    noise.putalpha(128)
    out = io.BytesIO()
    noise.save(out, "PNG")
    big = extract.prepare_image(out.getvalue(), 1024)
    assert big.data_url.startswith("data:image/jpeg;base64,")
    assert len(big.data_url) < 1_000_000
    small = extract.prepare_image(png_with_alpha(), 1024)
    assert small.data_url.startswith("data:image/png;base64,")


def png_with_alpha() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (40, 40), (255, 0, 0, 100)).save(out, "PNG")
    return out.getvalue()


async def test_attachments_are_counted_in_the_metrics(make_engine: EngineFactory) -> None:
    engine = make_engine()
    files = (
        attached("a.txt", b"alpha", "text/plain"),
        attached("b.bin", b"\x00", "application/octet-stream"),
    )
    await collect(engine, message("go", attachments=files))
    exposition = engine.metrics.exposition().decode()
    assert 'parley_attachments_total{kind="text",outcome="used"} 1.0' in exposition
    assert 'parley_attachments_total{kind="other",outcome="skipped"} 1.0' in exposition


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ('hi\n\n<file name="a.txt">\nA\n</file>\n\n[image: b.png]', "hi\n📎 a.txt, b.png"),
        ("[image: only.png]", "📎 only.png"),
        ("no files, but [image: x] in the words", "no files, but [image: x] in the words"),
        ("plain", "plain"),
    ],
)
def test_a_stored_message_is_shown_with_its_files_names(stored: str, shown: str) -> None:
    assert shown_text(stored) == shown


async def test_redaction_covers_attached_text_beside_images(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(redaction_enabled=True, redaction_store_original=False)
    files = (
        attached("contacts.txt", b"write to ann@example.com", "text/plain"),
        attached("cat.png", png(), "image/png"),
    )
    await collect(engine, message("who?", attachments=files))
    sent = user_text(fake_openai.requests[-1])
    assert "ann@example.com" not in sent and "[EMAIL_1]" in sent
    assert image_parts(fake_openai.requests[-1])  # the image still goes
    [stored] = (await engine.store.recent(message("x").conversation, 10)).messages[:1]
    assert "ann@example.com" not in stored.content and "ann@example.com" not in stored.parts


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.png", ""),
        ("https://files-edu.slack.com/files-pri/T1-F1/a.png", ""),
        ("http://files.slack.com/files-pri/T1-F1/a.png", "not a secure link"),
        ("http://127.0.0.1:9999/files-pri/T1-F1/a.png", ""),  # PARLEY_SLACK_API_URL's host
        ("https://evilslack.com/a.png", "not on Slack's file hosts"),
        ("https://slack.com.evil.test/a.png", "not on Slack's file hosts"),
        ("http://169.254.169.254/latest/meta-data", "not on Slack's file hosts"),
    ],
)
def test_slack_files_come_only_from_slacks_hosts(url: str, why: str) -> None:
    assert slack_host_check("http://127.0.0.1:9999/api/")(URL(url)) == why


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1&hm=2", ""),
        ("https://media.discordapp.net/attachments/1/2/a.png", ""),
        ("https://discord.com/api/v10/x", ""),  # PARLEY_DISCORD_API_URL's host
        ("https://cdn.discordapp.com.evil.test/a.png", "not on Discord's file hosts"),
        ("http://cdn.discordapp.com/a.png", "not a secure link"),
    ],
)
def test_discord_files_come_only_from_discords_hosts(url: str, why: str) -> None:
    assert discord_host_check("https://discord.com/api/v10")(URL(url)) == why


def test_usage_estimated_without_a_server_report_counts_images_by_their_rule() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    low = {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}
    text = {"type": "text", "text": "what is this?"}
    # The size is not kept with a part: at most 8 tiles at high (or auto) detail, 85 at low.
    assert content_tokens([text, image]) == content_tokens("what is this?") + 85 + 8 * 170
    assert content_tokens([low]) == 85
