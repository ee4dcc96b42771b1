"""Splitting text into overlapping chunks at natural boundaries."""

from __future__ import annotations

import itertools

import pytest
from coca_memory.chunking import split_text


def test_short_text_is_one_chunk() -> None:
    assert split_text("One paragraph only.", 800, 100) == ["One paragraph only."]


def test_chunks_never_exceed_the_size_and_cover_every_word() -> None:
    words = [f"word{i}" for i in range(2000)]
    text = "\n\n".join(" ".join(words[i : i + 37]) + "." for i in range(0, len(words), 37))

    chunks = split_text(text, 300, 50)

    assert all(len(chunk) <= 300 for chunk in chunks)
    found = {w.rstrip(".") for chunk in chunks for w in chunk.split()}
    assert found == set(words)


def test_chunks_end_at_sentence_boundaries_when_paragraphs_are_too_long() -> None:
    text = " ".join(f"Sentence number {i} says something." for i in range(30))

    chunks = split_text(text, 120, 40)

    assert len(chunks) > 1
    assert all(chunk.startswith("Sentence") and chunk.endswith(".") for chunk in chunks)


def test_consecutive_chunks_overlap() -> None:
    text = " ".join(f"Sentence number {i} says something." for i in range(30))

    chunks = split_text(text, 120, 40)

    for first, second in itertools.pairwise(chunks):
        last_sentence = first.rsplit(". ", 1)[-1]
        assert second.startswith(last_sentence.rstrip(".")), (first, second)


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    paragraphs = [f"Paragraph {i}. " + "Some filler text here. " * 5 for i in range(6)]

    chunks = split_text("\n\n".join(p.strip() for p in paragraphs), 300, 0)

    assert all(chunk.count("Paragraph") >= 1 for chunk in chunks)
    for chunk in chunks:
        for part in chunk.split("\n\n"):
            assert part.startswith("Paragraph")


def test_a_run_without_any_break_is_cut_at_the_size() -> None:
    chunks = split_text("x" * 1000, 300, 50)

    assert all(len(chunk) <= 300 for chunk in chunks)
    assert "".join(chunks).count("x") >= 1000


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_nonsensical_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        split_text("text", size, overlap)
