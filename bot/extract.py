"""What a file says, for the model: text files decoded, PDF and DOCX text extracted,
images checked and scaled down. Plain functions on bytes (CPU work, run off the event
loop by bot/attachments.py); each raises Unreadable with a short reason for the user.
"""

from __future__ import annotations

import base64
import io
import itertools
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from PIL import Image, UnidentifiedImageError

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# An image this big decoded would take gigabytes: refused before it is decoded.
MAX_IMAGE_PIXELS = 50_000_000
# A transparent image is kept as PNG up to this size, then as JPEG: history stores it.
MAX_STORED_PNG_BYTES = 1_000_000
TEXT_MIME_TYPES = frozenset({
    "application/json", "application/xml", "application/x-yaml", "application/yaml",
    "application/toml", "application/javascript", "application/x-sh", "application/sql",
    "application/x-python", "application/csv", "application/x-ndjson",
})  # fmt: skip
# Source code and data files that platforms often send as application/octet-stream.
TEXT_SUFFIXES = frozenset(
    ".txt .md .markdown .rst .csv .tsv .json .jsonl .ndjson .yaml .yml .toml .ini .cfg .conf"
    " .xml .html .htm .css .js .mjs .ts .tsx .jsx .py .pyi .rb .go .rs .java .kt .kts .swift"
    " .c .h .cc .cpp .hpp .cs .php .pl .lua .r .scala .sh .bash .zsh .ps1 .bat .sql .graphql"
    " .proto .tf .hcl .dockerfile .makefile .gradle .vue .svelte .dart .ex .exs .erl .hs .ml"
    " .clj .log .diff .patch .tex .env.example .gitignore".split()
)
# A DOCX is a zip archive: what it may unpack to before it is read.
MAX_UNPACKED_BYTES = 100_000_000
PDF = "application/pdf"
MAX_PDF_PAGES = 1000
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class Unreadable(Exception):
    """The file cannot be used; the message is the reason shown to the user."""


@dataclass(frozen=True, slots=True)
class PreparedImage:
    data_url: str
    width: int
    height: int


def kind_of(name: str, mime_type: str) -> str:
    """ "image", "text", "pdf", "docx" or "" (unsupported), by type and file name."""
    mime = mime_type.split(";")[0].strip().lower()
    suffix = PurePath(name.lower()).suffix
    if mime in IMAGE_TYPES.values() or suffix in (".png", ".jpg", ".jpeg", ".gif", ".webp"):
        return "image"
    if mime == PDF or suffix == ".pdf":
        return "pdf"
    if mime == DOCX or suffix == ".docx":
        return "docx"
    if mime.startswith("text/") or mime in TEXT_MIME_TYPES or mime.endswith(("+json", "+xml")):
        return "text"
    if suffix in TEXT_SUFFIXES or name.lower() in ("makefile", "dockerfile", "readme"):
        return "text"
    return ""


def decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192] and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        raise Unreadable("not a text file")
    try:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # Not UTF-8: Latin-1 decodes any bytes, and most such files are Windows text.
    return data.decode("cp1252", errors="replace")


def pdf_text(data: bytes, max_chars: int) -> str:
    from pypdf import PdfReader  # imported when a PDF comes: a quick start without one
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("the PDF is encrypted")
        pages: list[str] = []
        length = 0
        # Pages past MAX_PDF_PAGES are not read: tens of thousands of tiny pages fit in
        # a few megabytes and would hold one of the two file workers for minutes.
        for page in itertools.islice(reader.pages, MAX_PDF_PAGES):
            text = page.extract_text() or ""
            pages.append(text)
            length += len(text)
            if length >= max_chars:
                break
    except Unreadable:
        raise
    # PyPdfError, not only PdfReadError: pypdf's own limits (LimitReachedError, a
    # 1 kB file with a huge array) must be one line for the user, not a crash.
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise Unreadable("not a readable PDF") from error
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise Unreadable("the PDF has no text (a scan?)")
    return text


def docx_text(data: bytes) -> str:
    import docx  # python-docx; imported when a DOCX comes

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:  # a zip bomb stops here
            if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED_BYTES:
                raise Unreadable("the document is too large once unpacked")
        document = docx.Document(io.BytesIO(data))
    # SyntaxError: lxml's XMLSyntaxError, for a document whose XML is broken.
    except (zipfile.BadZipFile, KeyError, ValueError, SyntaxError) as error:
        raise Unreadable("not a readable DOCX") from error
    lines = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    text = "\n".join(lines).strip()
    if not text:
        raise Unreadable("the document has no text")
    return text


def prepare_image(data: bytes, max_side: int) -> PreparedImage:
    """The image scaled to fit max_side, re-encoded (PNG if it has transparency, else
    JPEG), without its metadata (camera, location), as a data: URL."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_TYPES:
                raise Unreadable(f"{image.format or 'this'} images are not supported")
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Unreadable(f"the image is too large ({image.width}x{image.height})")
            image.draft("RGB", (max_side, max_side))  # JPEG decodes smaller at once
            mode = "RGBA" if _has_alpha(image) else "RGB"
            # Scaled before converted: converting first copies every pixel of a big image.
            frame = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert(mode)
            frame.thumbnail((max_side, max_side))  # the first frame of an animation
            frame = frame.convert(mode)
    # ValueError: Pillow's own limits, e.g. a 3 kB PNG whose text chunk unpacks past
    # PngImagePlugin.MAX_TEXT_CHUNK.
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise Unreadable("not a readable image") from error
    mime, encoded = _encode(frame)
    return PreparedImage(f"data:{mime};base64,{encoded}", frame.width, frame.height)


def _encode(frame: Image.Image) -> tuple[str, str]:
    """(type, base64): PNG for transparency unless that is too big for history, where
    it is flattened on white and stored as JPEG, which is bounded at this size."""
    if frame.mode == "RGBA":
        png = io.BytesIO()
        frame.save(png, "PNG")
        if png.tell() <= MAX_STORED_PNG_BYTES:
            return "image/png", base64.b64encode(png.getvalue()).decode("ascii")
        flat = Image.new("RGB", frame.size, "white")
        flat.paste(frame, mask=frame.getchannel("A"))
        frame = flat
    jpeg = io.BytesIO()
    frame.save(jpeg, "JPEG", quality=85)
    return "image/jpeg", base64.b64encode(jpeg.getvalue()).decode("ascii")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
