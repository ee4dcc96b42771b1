"""What an upload is (extension and content must agree) and the text in it.

``detect_kind`` runs at upload time, on the request path: cheap checks only. ``extract_text`` runs in
the indexer's executor (PDF parsing is CPU-bound) and raises ``DocumentRejected`` with a reason a
person can read when a document has no usable text.
"""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import PurePosixPath

from coca_platform.errors import InvalidArgument
from pypdf import PdfReader
from pypdf.errors import PyPdfError
from selectolax.lexbor import LexborHTMLParser

from coca_memory.models import DocumentKind

_EXTENSIONS = {
    ".txt": DocumentKind.TEXT,
    ".text": DocumentKind.TEXT,
    ".md": DocumentKind.MARKDOWN,
    ".markdown": DocumentKind.MARKDOWN,
    ".html": DocumentKind.HTML,
    ".htm": DocumentKind.HTML,
    ".pdf": DocumentKind.PDF,
}
SUPPORTED = ", ".join(sorted(_EXTENSIONS))
# Signatures of binary formats that must never pass as text (PDF, ZIP/Office, images, gzip, ELF, ...).
_BINARY_MAGIC = (b"%PDF-", b"PK\x03\x04", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"\x1f\x8b", b"\x7fELF",
                 b"MZ", b"\xd0\xcf\x11\xe0", b"Rar!", b"7z\xbc\xaf")  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_HTML_DROP = "script, style, noscript, template, svg, iframe, object, head"
_HTML_BLOCKS = (
    "p, div, section, article, header, footer, main, aside, nav, h1, h2, h3, h4, h5, h6, ul, ol, dl,"
    " table, blockquote, pre, figure, figcaption, hr, form, fieldset, details, summary, address"
)
_HTML_LINES = "br, li, tr, dt, dd, caption"
# Private-use marks for block and line ends, so collapsing the source's whitespace keeps them.
_PARAGRAPH, _LINE = "\ue000", "\ue001"
_SPACES = re.compile(r"\s+")
_AROUND_MARKS = re.compile(r" ?([\ue000\ue001]) ?")


class UnsupportedMediaType(InvalidArgument):
    """The upload is not a type the service indexes, or its content is not what its name says (415)."""

    code = "unsupported_media_type"
    http_status = 415


class DocumentRejected(InvalidArgument):
    """A document that cannot be indexed (no text, unreadable PDF, too large): it ends ``failed``."""

    code = "document_rejected"


def clean_filename(raw: str | None) -> str:
    """The base name of an uploaded file, without directories or control characters (≤ 255 chars)."""
    name = unicodedata.normalize("NFC", (raw or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = _CONTROL.sub("", name).strip().strip(".")
    if not name:
        raise InvalidArgument("the uploaded file needs a name with an extension (e.g. notes.md)")
    if len(name) > 255:
        suffix = PurePosixPath(name).suffix[:16]
        name = name[: 255 - len(suffix)] + suffix
    return name


def detect_kind(filename: str, head: bytes) -> DocumentKind:
    """The kind named by the extension, if the content (its first KiBs) agrees; else 415."""
    kind = _EXTENSIONS.get(PurePosixPath(filename.lower()).suffix)
    if kind is None:
        raise UnsupportedMediaType(f"unsupported file type {filename!r}: expected one of {SUPPORTED}")
    if kind is DocumentKind.PDF:
        if b"%PDF-" not in head[:1024]:
            raise UnsupportedMediaType(f"{filename!r} is named .pdf but is not a PDF")
        return kind
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
        raise UnsupportedMediaType(f"{filename!r} is named as text but its content is binary")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut at the end of `head` is fine
            raise UnsupportedMediaType(f"{filename!r} is not UTF-8 text") from exc
    return kind


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    lines = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", lines).strip()


def _html_text(data: bytes) -> str:
    """Visible text, with paragraph breaks after block elements and line breaks after lines and items;
    the source's own whitespace collapses as a browser would collapse it."""
    tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    for node in tree.css(_HTML_DROP):
        node.decompose()
    for node in tree.css(_HTML_BLOCKS):
        node.insert_after(_PARAGRAPH)
    for node in tree.css(_HTML_LINES):
        node.insert_after(_LINE)
    root = tree.body or tree.root
    raw = root.text() if root is not None else ""
    text = _AROUND_MARKS.sub(r"\1", _SPACES.sub(" ", raw))
    body = text.replace(_PARAGRAPH, "\n\n").replace(_LINE, "\n")
    return f"{title}\n\n{body}" if title and not body.strip().startswith(title) else body


def _pdf_text(data: bytes) -> str:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentRejected("the PDF is encrypted with a password")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DocumentRejected(f"the PDF could not be read ({type(exc).__name__})") from exc


def extract_text(kind: DocumentKind, data: bytes) -> str:
    """The document's text, normalised (NFC, ``\\n`` line ends, no control characters, single blank
    lines between paragraphs). Raises ``DocumentRejected`` when there is none."""
    if kind is DocumentKind.PDF:
        text = _pdf_text(data)
    elif kind is DocumentKind.HTML:
        text = _html_text(data)
    else:
        text = data.decode("utf-8-sig", errors="replace")
    text = _normalise(text)
    if not text:
        if kind is DocumentKind.PDF:
            raise DocumentRejected("the PDF has no extractable text (a scan without a text layer?)")
        raise DocumentRejected("the document contains no text")
    return text
