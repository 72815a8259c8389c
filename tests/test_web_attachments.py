"""Files in the web chat over real sockets: POST /upload, then a message naming them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import ClientSession

from adapters.web import create
from tests.attachment_files import decoded_image, image_parts, png, user_text
from tests.conftest import EngineFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.test_web_helpers import browser_like, receive, serve, until_done


@pytest.fixture
async def url(make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.delenv("PARLEY_WEB_TOKEN", raising=False)
    engine = make_engine(attachment_max_bytes=2_000_000)
    async with serve(engine, create(engine, engine.settings)) as address:
        yield address


async def upload(client: ClientSession, url: str, name: str, data: bytes, mime: str,
                 origin: str | None = None) -> tuple[int, str]:  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=mime)
    headers = {"Origin": url if origin is None else origin}
    async with client.post(url + "/upload", data=form, headers=headers) as response:
        return response.status, await response.text()


async def test_uploaded_files_go_with_the_next_message(url: str, fake_openai: FakeOpenAI) -> None:
    async with browser_like() as client:
        async with client.get(url + "/"):
            pass
        status, body = await upload(client, url, "plan.md", b"# Plan\nShip it.", "text/markdown")
        assert status == 200
        text_id = (await _json(body))["id"]
        _, body = await upload(client, url, "dot.png", png(30, 20), "image/png")
        image_id = (await _json(body))["id"]
        socket = await client.ws_connect(url + "/ws", origin=url)
        assert (await receive(socket))["type"] == "history"
        files = [text_id, image_id]
        await socket.send_json({"type": "message", "text": "thoughts?", "files": files})
        frames = await until_done(socket)
        await socket.close()
    assert frames[-2]["type"] == "final"
    request = fake_openai.requests[-1]
    assert user_text(request) == (
        'thoughts?\n\n<file name="plan.md">\n# Plan\nShip it.\n</file>\n\n[image: dot.png]'
    )
    assert decoded_image(image_parts(request)[0]).size == (30, 20)


async def test_a_session_cannot_use_another_sessions_upload(
    url: str, fake_openai: FakeOpenAI
) -> None:
    async with browser_like() as owner:
        async with owner.get(url + "/"):
            pass
        _, body = await upload(owner, url, "secret.txt", b"owner's secret", "text/plain")
        secret_id = (await _json(body))["id"]
    async with browser_like() as other:
        async with other.get(url + "/"):
            pass
        socket = await other.ws_connect(url + "/ws", origin=url)
        await receive(socket)
        await socket.send_json({"type": "message", "text": "hi", "files": [secret_id]})
        await until_done(socket)
        await socket.close()
    assert user_text(fake_openai.requests[-1]) == "hi"


async def test_uploads_are_bounded_and_same_origin_only(url: str) -> None:
    async with browser_like() as client:
        async with client.get(url + "/"):
            pass
        # Over the server's 1 MB body limit for other requests, within [attachments].
        status, _ = await upload(client, url, "log.txt", b"x" * 1_500_000, "text/plain")
        assert status == 200
        status, body = await upload(client, url, "big.txt", b"x" * 2_500_000, "text/plain")
        assert (status, body) == (413, "big.txt is too large: the limit is 2.0 MB.")
        status, _ = await upload(
            client, url, "a.txt", b"a", "text/plain", origin="http://evil.test"
        )
        assert status == 403
    async with ClientSession() as stranger:  # no session cookie
        status, _ = await upload(stranger, url, "a.txt", b"a", "text/plain")
        assert status == 403


async def _json(body: str) -> dict[str, str]:
    import json

    loaded: dict[str, str] = json.loads(body)
    return loaded
