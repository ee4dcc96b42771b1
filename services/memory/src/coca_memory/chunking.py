"""Splitting a document's text into overlapping chunks of at most ``size`` characters.

Boundaries are tried coarse to fine: paragraphs, lines, sentences, words, and only then characters,
so a chunk ends at the largest natural break that lets it fit. Consecutive chunks share up to
``overlap`` characters (whole pieces where possible), so a passage cut at a boundary still reads
whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# (pattern that splits, separator that joins the pieces back)
_LEVELS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\n\s*\n"), "\n\n"),
    (re.compile(r"\n"), "\n"),
    (re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+"), " "),
    (re.compile(r"\s+"), " "),
)

Piece = tuple[str, str]  # (separator before it, text)


def _pieces(text: str, size: int, sep: str, level: int = 0) -> Iterator[Piece]:
    if len(text) <= size:
        yield sep, text
        return
    if level == len(_LEVELS):  # one unbroken run longer than a chunk: cut it
        for start in range(0, len(text), size):
            yield (sep if start == 0 else ""), text[start : start + size]
        return
    pattern, joiner = _LEVELS[level]
    parts = [p.strip() for p in pattern.split(text) if p.strip()]
    if len(parts) <= 1:
        yield from _pieces(text, size, sep, level + 1)
        return
    for i, part in enumerate(parts):
        yield from _pieces(part, size, sep if i == 0 else joiner, level + 1)


def _length(pieces: list[Piece]) -> int:
    return sum(len(text) + len(sep) for sep, text in pieces) - (len(pieces[0][0]) if pieces else 0)


def _join(pieces: list[Piece]) -> str:
    return "".join(text if i == 0 else sep + text for i, (sep, text) in enumerate(pieces))


def _tail(pieces: list[Piece], limit: int) -> list[Piece]:
    """The end of a chunk to repeat at the start of the next: whole pieces up to ``limit`` characters,
    or else the last piece's final words."""
    if limit <= 0:
        return []
    kept: list[Piece] = []
    for piece in reversed(pieces):
        if _length([piece, *kept]) > limit:
            break
        kept.insert(0, piece)
    if kept:
        return kept
    source = pieces[-1][1]
    start = max(len(source) - limit, 0)
    if start > 0 and not source[start - 1].isspace():  # never start inside a word
        cut = source.find(" ", start)
        if cut == -1:
            return []
        start = cut + 1
    text = source[start:].strip()
    return [(" ", text)] if text else []


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of ``text`` (already normalised), each at most ``size`` characters."""
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError("chunk size must be positive and larger than the overlap")
    chunks: list[str] = []
    current: list[Piece] = []
    for sep, piece in _pieces(text.strip(), size, ""):
        if current and _length([*current, (sep, piece)]) > size:
            chunks.append(_join(current))
            current = _tail(current, min(overlap, size - len(piece) - len(sep)))
        current.append((sep, piece))
    if current:
        chunks.append(_join(current))
    return chunks
