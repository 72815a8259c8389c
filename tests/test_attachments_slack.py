"""Files sent with a Slack message, through slack-bolt, a fake Slack (which serves
url_private) and the fake model: what reaches the model, what the user is told."""

from __future__ import annotations

from tests.attachment_files import (
    decoded_image,
    docx_with_text,
    image_parts,
    pdf_with_text,
    png,
    user_text,
)
from tests.fakes.openai_server import Text
from tests.slack_helpers import MENTION_TS, TOKEN, Start, mention, message, start

__all__ = ["start"]  # the fixture, used by name


async def test_a_png_and_a_text_file_reach_the_model(start: Start) -> None:
    h = await start()
    files = [
        h.slack.share_file("chart.png", png(3000, 1500), "image/png"),
        h.slack.share_file("notes.txt", b"The launch code is 4417.\n", "text/plain"),
    ]
    h.model.script(Text("A red chart, and the code is 4417."))
    assert await h.event(mention("what is in these?", files=files)) == 200

    request = h.model.requests[-1]
    [image] = image_parts(request)
    assert decoded_image(image).size == (1024, 512)  # scaled down to [attachments]
    text = user_text(request)
    assert text.startswith("what is in these?")
    assert '<file name="notes.txt">\nThe launch code is 4417.\n</file>' in text
    assert "[image: chart.png]" in text
    # Downloaded from the fake's url_private with the bot token, each once.
    assert sorted(h.slack.downloads) == [("F0001", f"Bearer {TOKEN}"), ("F0002", f"Bearer {TOKEN}")]
    assert h.texts() == ["A red chart, and the code is 4417."]


async def test_oversized_and_unsupported_files_get_one_note_and_an_answer(start: Start) -> None:
    h = await start(attachment_max_bytes=1000)
    files = [
        h.slack.share_file("huge.txt", b"x" * 5000, "text/plain"),
        h.slack.share_file("setup.exe", b"MZ\x90\x00", "application/x-msdownload"),
        h.slack.share_file("small.txt", b"keep me", "text/plain"),
    ]
    h.model.script(Text("Answered."))
    await h.event(mention("read these", files=files))

    texts = h.texts()
    assert texts[-1] == "Answered."
    assert (
        "I could not use these 2 files: huge.txt (too large: 5.0 KB, the limit is 1.0 KB); "
        "setup.exe (unsupported type application/x-msdownload)."
    ) in texts
    text = user_text(h.model.requests[-1])
    assert "keep me" in text and "xxxx" not in text
    # Neither skipped file was downloaded: the size and type were enough to refuse.
    assert [file_id for file_id, _ in h.slack.downloads] == ["F0003"]


async def test_a_pdf_and_a_docx_are_read_as_text(start: Start) -> None:
    h = await start()
    files = [
        h.slack.share_file(
            "report.pdf", pdf_with_text("Quarterly revenue was 42 million"), "application/pdf"
        ),
        h.slack.share_file(
            "memo.docx",
            docx_with_text("The offsite is in Lisbon."),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    ]
    await h.event(mention("summarise", files=files))
    text = user_text(h.model.requests[-1])
    assert '<file name="report.pdf">\nQuarterly revenue was 42 million\n</file>' in text
    assert '<file name="memo.docx">\nThe offsite is in Lisbon.\n</file>' in text
    assert not image_parts(h.model.requests[-1])


async def test_a_model_without_vision_says_so_and_still_reads_the_text(start: Start) -> None:
    h = await start(model="gpt-3.5-turbo")
    files = [
        h.slack.share_file("cat.png", png(), "image/png"),
        h.slack.share_file("notes.md", b"# Heading\nbody", "text/markdown"),
    ]
    await h.event(mention("look", files=files))
    assert any("cat.png (this model cannot see images)" in t for t in h.texts())
    request = h.model.requests[-1]
    assert not image_parts(request)
    assert "# Heading" in user_text(request)


async def test_a_file_alone_with_no_text_is_answered(start: Start) -> None:
    h = await start()
    files = [h.slack.share_file("todo.txt", b"buy milk", "text/plain")]
    await h.event(message("", ts="1700000000.000100", channel="D1", files=files,
                          subtype="file_share"))  # fmt: skip
    assert "buy milk" in user_text(h.model.requests[-1])


async def test_a_follow_up_after_a_restart_still_sees_the_picture(start: Start) -> None:
    first = await start()
    files = [
        first.slack.share_file("chart.png", png(), "image/png"),
        first.slack.share_file("notes.txt", b"code 4417", "text/plain"),
    ]
    await first.event(mention("remember these", files=files))
    await first.adapter.stop()

    again = await start()  # a new process: same database, nothing in memory
    follow_up = message("what was in that picture?", ts="1699999999.000300", thread_ts=MENTION_TS)
    await again.event(follow_up, event_id="Ev-after-restart")  # the new sender counts anew
    request = again.model.requests[-1]
    assert user_text(request, -1) == "what was in that picture?"
    earlier = next(m for m in request["messages"] if m["role"] == "user")
    assert isinstance(earlier["content"], list)
    assert "code 4417" in user_text(request, 0)
    [picture] = [p for p in earlier["content"] if p["type"] == "image_url"]
    assert decoded_image(picture).size == (64, 48)
    assert again.slack.downloads == []  # history had it: nothing downloaded again


async def test_files_from_other_hosts_are_not_downloaded(start: Start) -> None:
    h = await start()
    elsewhere = {"id": "F9", "name": "x.txt", "mimetype": "text/plain", "size": 3,
                 "url_private": "http://169.254.169.254/latest/meta-data"}  # fmt: skip
    await h.event(mention("read it", files=[elsewhere]))
    assert any("x.txt (not on Slack's file hosts)" in t for t in h.texts())


async def test_a_partly_listed_file_is_completed_with_files_info(start: Start) -> None:
    h = await start()
    full = h.slack.share_file("minutes.txt", b"Decided: ship Friday.", "text/plain")
    partial = {"id": full["id"], "file_access": "check_file_info"}
    gone = {"id": "F9999", "file_access": "check_file_info"}
    await h.event(mention("what did we decide?", files=[partial, gone]))
    assert [call.params["file"] for call in h.slack.calls_to("files.info")] == [full["id"], "F9999"]
    assert "Decided: ship Friday." in user_text(h.model.requests[-1])
    assert any("file (no longer available to download)" in t for t in h.texts())
