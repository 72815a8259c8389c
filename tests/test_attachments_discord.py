"""Files attached to a Discord message, through discord.py, a fake Discord (which serves
the attachments like its CDN) and the fake model."""

from __future__ import annotations

from tests.attachment_files import decoded_image, image_parts, pdf_with_text, png, user_text
from tests.discord_helpers import BotFactory, content, start_bot
from tests.fakes import eventually
from tests.fakes.discord_payloads import CHANNEL_ID
from tests.fakes.openai_server import Text

__all__ = ["start_bot"]  # the fixture, for pytest to find here


async def test_an_image_a_pdf_and_a_text_file_reach_the_model(start_bot: BotFactory) -> None:
    bot = await start_bot()
    files = [
        bot.fake.attach("photo.png", png(2000, 2000), "image/png"),
        bot.fake.attach("spec.pdf", pdf_with_text("The bridge opens at noon"), "application/pdf"),
        bot.fake.attach("config.json", b'{"retries": 3}', "application/json; charset=utf-8"),
    ]
    await bot.mention("what do these say?", attachments=files)
    await bot.final_text(contains="echo:")

    request = bot.model.requests[-1]
    [image] = image_parts(request)
    assert decoded_image(image).size == (1024, 1024)
    text = user_text(request)
    assert text.startswith("what do these say?")
    assert '<file name="spec.pdf">\nThe bridge opens at noon\n</file>' in text
    assert '<file name="config.json">\n{"retries": 3}\n</file>' in text


async def test_skipped_files_get_a_note_and_the_rest_is_answered(start_bot: BotFactory) -> None:
    bot = await start_bot(attachment_max_bytes=2000)
    files = [
        bot.fake.attach("big.csv", b"a,b\n" * 1000, "text/csv"),
        bot.fake.attach("song.mp3", b"ID3", "audio/mpeg"),
        bot.fake.attach("ok.txt", b"short and sweet", "text/plain"),
    ]
    await bot.mention("read", attachments=files)
    await bot.final_text(contains="echo:")
    [note] = [c for c in bot.fake.channel_contents(CHANNEL_ID) if "could not use" in c]
    assert "big.csv (too large: 4.0 KB, the limit is 2.0 KB)" in note
    assert "song.mp3 (unsupported type audio/mpeg)" in note
    assert "short and sweet" in user_text(bot.model.requests[-1])
    assert bot.fake.downloads == [files[2]["id"]]


async def test_a_file_given_to_slash_ask_reaches_the_model(start_bot: BotFactory) -> None:
    bot = await start_bot()
    file = bot.fake.attach("agenda.md", b"1. Budget\n2. Hiring", "text/markdown")
    bot.model.script(Text("Budget."))
    await bot.fake.send_interaction(
        "ask", options={"prompt": "what is first?"}, files={"file": file}
    )
    edits = bot.fake.calls_to
    await eventually(
        lambda: [c for c in edits("PATCH", r"/webhooks/.*/@original") if content(c) == "Budget."]
    )
    text = user_text(bot.model.requests[-1])
    assert text == 'what is first?\n\n<file name="agenda.md">\n1. Budget\n2. Hiring\n</file>'
    assert bot.fake.downloads == [file["id"]]
