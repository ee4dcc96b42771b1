"""Settings that depend on each other."""

from __future__ import annotations

import pytest
from coca_memory.settings import Settings
from pydantic import ValidationError

MIB = 1024 * 1024


def test_documents_up_to_20_mib_are_accepted_by_default() -> None:
    settings = Settings()

    assert settings.max_document_bytes == 20 * MIB
    assert settings.max_body_bytes > 20 * MIB  # the body limit leaves room for the multipart framing


def test_request_body_limit_follows_the_document_limit_unless_set() -> None:
    assert Settings(max_document_bytes=5 * MIB).max_body_bytes > 5 * MIB
    assert Settings(max_document_bytes=5 * MIB, max_body_bytes=2 * MIB).max_body_bytes == 2 * MIB


def test_overlap_must_be_smaller_than_the_chunk_size() -> None:
    with pytest.raises(ValidationError, match="CHUNK_OVERLAP"):
        Settings(chunk_size=200, chunk_overlap=200)


@pytest.mark.parametrize("uri", ["/var/lib/milvus.db", "milvus:19530"])
def test_milvus_uri_must_be_a_server_url(uri: str) -> None:
    with pytest.raises(ValidationError):
        Settings(milvus_uri=uri)


def test_milvus_lite_is_used_when_no_server_is_named() -> None:
    settings = Settings()

    assert settings.milvus_uri == ""
    assert settings.milvus_lite_path.endswith("milvus.db")
