"""Type checks at upload time and text extraction at indexing time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from coca_memory.models import DocumentKind
from coca_memory.parsing import (
    DocumentRejected,
    UnsupportedMediaType,
    clean_filename,
    detect_kind,
    extract_text,
)
from coca_platform.errors import InvalidArgument


@pytest.mark.parametrize(
    ("filename", "head", "kind"),
    [
        ("notes.txt", b"hello", DocumentKind.TEXT),
        ("README.MD", b"# Title", DocumentKind.MARKDOWN),
        ("page.htm", b"<p>hi</p>", DocumentKind.HTML),
        ("paper.pdf", b"%PDF-1.7\n...", DocumentKind.PDF),
        ("utf8.txt", "caf\u00e9".encode(), DocumentKind.TEXT),
        ("cut.txt", "ab\u00e9".encode()[:-1], DocumentKind.TEXT),  # a character cut by the sniff window
    ],
)
def test_kind_comes_from_an_extension_its_content_agrees_with(
    filename: str, head: bytes, kind: DocumentKind
) -> None:
    assert detect_kind(filename, head) is kind


@pytest.mark.parametrize(
    ("filename", "head"),
    [
        ("a.docx", b"PK\x03\x04"),
        ("a.pdf", b"hello"),
        ("a.txt", b"%PDF-1.4"),
        ("a.txt", b"a\x00b"),
        ("a", b"x"),
    ],
)
def test_disagreeing_or_unknown_types_are_unsupported(filename: str, head: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        detect_kind(filename, head)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("bad\x00name\x1f.txt", "badname.txt"),
        ("a" * 300 + ".txt", "a" * 251 + ".txt"),
    ],
)
def test_filenames_lose_directories_and_control_characters(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean


@pytest.mark.parametrize("raw", [None, "", "  ", "dir/", "..."])
def test_an_upload_without_a_name_is_refused(raw: str | None) -> None:
    with pytest.raises(InvalidArgument):
        clean_filename(raw)


def test_text_is_normalised() -> None:
    raw = "\ufeffTitle\r\n\r\n\r\n\r\nBody line   \r\nnext\x07 line\n\n\n"

    assert extract_text(DocumentKind.TEXT, raw.encode()) == "Title\n\nBody line\nnext line"


def test_html_keeps_visible_text_in_blocks() -> None:
    html = (
        b"<html><head><title>Guide</title><style>p{}</style></head><body><h1>Setup</h1>"
        b"<p>Install   the\n   <b>agent</b> first.</p><ul><li>one</li><li>two</li></ul>"
        b"<script>secret()</script></body></html>"
    )

    assert extract_text(DocumentKind.HTML, html) == "Guide\n\nSetup\n\nInstall the agent first.\n\none\ntwo"


def test_pdf_text_is_extracted_page_by_page(make_pdf: Callable[[list[list[str]]], bytes]) -> None:
    pdf = make_pdf([["First page, first line.", "Second line (with parentheses)."], ["Page two."]])

    assert extract_text(DocumentKind.PDF, pdf) == (
        "First page, first line.\nSecond line (with parentheses).\n\nPage two."
    )


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        (DocumentKind.TEXT, b"", "contains no text"),
        (DocumentKind.PDF, b"%PDF-1.4 junk", "could not be read"),
        (DocumentKind.HTML, b"<script>x()</script>", "contains no text"),
    ],
)
def test_documents_without_text_are_rejected_with_a_reason(
    kind: DocumentKind, data: bytes, reason: str
) -> None:
    with pytest.raises(DocumentRejected, match=reason):
        extract_text(kind, data)
