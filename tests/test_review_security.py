"""Adversarial review of issue #14: each test is an attack that must fail."""

from __future__ import annotations

import io
import socket
import zipfile
from collections.abc import Callable

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image, PngImagePlugin
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject
from yarl import URL

from adapters.files import discord_host_check, slack_host_check
from bot.config import FetchSettings
from bot.extract import DOCX, MAX_PDF_PAGES, Unreadable, pdf_text, prepare_image
from bot.fetching import GuardedResolver, refused_address
from bot.messages import Attachment
from bot.tools.fetch import register_fetch
from bot.tools.registry import Registry, ToolResult
from tests.attachment_files import docx_with_text
from tests.conftest import EngineFactory, collect, final_text, message
from tests.fakes.openai_server import FakeOpenAI
from tests.test_tools_fetch import _context

# IPv6 forms that reach an IPv4 address through a mapping, a tunnel or a translator.
DISGUISED_INTERNAL = {
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::127.0.0.1": "loopback",  # IPv4-compatible (deprecated, still parsed)
    "::ffff:0:7f00:1": "loopback",  # SIIT, IPv4-translated
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::": "link-local",  # 6to4 of the metadata service
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of the metadata service
    "64:ff9b:1::a00:1": "private",  # local-use NAT64 of 10.0.0.1
}


@pytest.mark.parametrize(("address", "why"), DISGUISED_INTERNAL.items())
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(address: str, why: str) -> None:
    assert refused_address(address) == why


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::", "2606:4700::1111"])
def test_public_addresses_in_those_forms_stay_reachable(address: str) -> None:
    assert refused_address(address) == ""


async def _fetch(url: str, *hosts: str) -> ToolResult:
    registry = Registry()
    register_fetch(registry, FetchSettings(allow_hosts=hosts))
    return await registry.run("fetch_url", f'{{"url": "{url}"}}', _context(), timeout=10)


@pytest.mark.parametrize("host", ["[::7f00:1]", "[2002:a9fe:a9fe::]", "[64:ff9b::a9fe:a9fe]"])
async def test_fetch_url_refuses_disguised_metadata_and_loopback(host: str) -> None:
    result = await _fetch(f"http://{host}/latest/meta-data/", "*")
    assert not result.ok
    assert "address, which is refused unless listed exactly" in result.content


class _Answers(AbstractResolver):
    """Stands in for DNS (no name server here): every name resolves to `address`."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=self.address, port=port, family=family,
                          proto=0, flags=0)
        ]  # fmt: skip

    async def close(self) -> None:
        return None


async def _resolve_listed_name(address: str) -> list[ResolveResult]:
    resolver = GuardedResolver(lambda host: host == "intranet.test")
    resolver._resolver = _Answers(address)  # type: ignore[assignment]
    return await resolver.resolve("intranet.test", 80)


async def test_a_name_listed_exactly_reaches_the_intranet() -> None:
    [found] = await _resolve_listed_name("10.0.0.5")
    assert found["host"] == "10.0.0.5"


@pytest.mark.parametrize("address", ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"])
async def test_a_name_listed_exactly_never_reaches_the_metadata_service(address: str) -> None:
    with pytest.raises(OSError, match="link-local address, which is not allowed"):
        await _resolve_listed_name(address)


def test_an_image_of_huge_dimensions_is_refused_before_it_is_decoded() -> None:
    picture = io.BytesIO()
    Image.new("1", (8000, 8000)).save(picture, "PNG")  # 64 Mpixels in 8 kB
    with pytest.raises(Unreadable, match=r"too large \(8000x8000\)"):
        prepare_image(picture.getvalue(), 2048)


async def test_a_blocked_user_reaches_neither_the_model_nor_the_file_hosts(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    engine = make_engine(access_block_users=("test:mallory",))
    assert final_text(await collect(engine, message("our plans", user="alice")))
    asked = fake_openai.request_count
    downloads: list[int] = []

    async def download(max_bytes: int) -> bytes:
        downloads.append(max_bytes)
        return b"read me"

    note = Attachment("note.txt", "text/plain", 7, download)
    for text in ("/summarize", "/summarize 24h", "look", "/help"):
        await collect(engine, message(text, user="mallory", attachments=(note,)))
    assert fake_openai.request_count == asked
    assert downloads == []


def _pdf_with_a_huge_array() -> bytes:
    """901 bytes that trip pypdf's array limit (LimitReachedError) when read."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    })  # fmt: skip
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    contents = StreamObject()
    contents.set_data(b"BT /F1 12 Tf 10 10 Td [" + b"1 " * 100_001 + b"] TJ ET\n")
    page[NameObject("/Contents")] = writer._add_object(contents.flate_encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_a_pdf_tripping_pypdfs_limits_is_named_and_the_message_answered(
    make_engine: EngineFactory, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    data = _pdf_with_a_huge_array()

    async def fetch(max_bytes: int) -> bytes:
        return data

    engine = make_engine()
    bomb = Attachment("bomb.pdf", "application/pdf", len(data), fetch)
    events = await collect(engine, message("read", attachments=(bomb,)))
    assert [e.text for e in events if e.kind.value == "notice"] == [
        "I could not use this file: bomb.pdf (not a readable PDF)."
    ]
    assert final_text(events) == "echo: read"
    assert "Traceback" not in caplog.text


def _docx_with_broken_xml() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(docx_with_text("hello")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as broken:
        for entry in source.infolist():
            data = source.read(entry.filename)
            broken.writestr(
                entry, b"<w:document" if entry.filename == "word/document.xml" else data
            )
    return out.getvalue()


async def test_a_docx_with_broken_xml_is_named_and_the_message_answered(
    make_engine: EngineFactory, fake_openai: FakeOpenAI
) -> None:
    data = _docx_with_broken_xml()

    async def fetch(max_bytes: int) -> bytes:
        return data

    engine = make_engine()
    broken = Attachment("notes.docx", DOCX, len(data), fetch)
    events = await collect(engine, message("read", attachments=(broken,)))
    assert [e.text for e in events if e.kind.value == "notice"] == [
        "I could not use this file: notes.docx (not a readable DOCX)."
    ]
    assert final_text(events) == "echo: read"


def test_a_png_whose_text_chunk_unpacks_too_far_is_unreadable() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 3_000_000, zip=True)  # 3 kB packed, 3 MB unpacked
    picture = io.BytesIO()
    Image.new("RGB", (4, 4)).save(picture, "PNG", pnginfo=info)
    with pytest.raises(Unreadable, match="not a readable image"):
        prepare_image(picture.getvalue(), 512)


@pytest.mark.parametrize(
    ("check", "url"),
    [
        (slack_host_check("https://slack.com/api/"), "http://slack.com/files-pri/T1-F1/a.png"),
        (discord_host_check("https://discord.com/api/v10"), "http://discord.com/x/a.png"),
    ],
)
def test_the_token_never_goes_to_the_api_host_in_clear(
    check: Callable[[URL], str], url: str
) -> None:
    assert check(URL(url)) in ("not a secure link", "not on Discord's file hosts")
    assert check(URL(url.replace("http://", "https://"))) == ""


def _pdf_with_text_on_page(text: str, page_number: int) -> bytes:
    writer = PdfWriter()
    for _ in range(page_number - 1):
        writer.add_blank_page(10, 10)
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    })  # fmt: skip
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    contents = StreamObject()
    contents.set_data(f"BT /F1 12 Tf 10 10 Td ({text}) Tj ET\n".encode())
    page[NameObject("/Contents")] = writer._add_object(contents)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_pdf_is_read_up_to_a_page_limit() -> None:
    assert pdf_text(_pdf_with_text_on_page("early", 3), 1000) == "early"
    with pytest.raises(Unreadable, match="no text"):
        pdf_text(_pdf_with_text_on_page("late", MAX_PDF_PAGES + 1), 1000)
