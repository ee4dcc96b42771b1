"""Knowledge bases, uploads, indexing and search over HTTP, against real infrastructure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from .conftest import MAX_DOCUMENT_BYTES, KnowledgeApi, Tenant

HANDBOOK = [
    "Passwords. To reset your password, open Settings, choose Security and press 'Reset password'. "
    "A reset link is emailed to you and expires after one hour.",
    "Holidays. Every employee has twenty-five days of paid vacation per year. Unused vacation days "
    "carry over to the next year, up to five days.",
    "Expenses. Travel expenses are reimbursed within two weeks when the receipts are uploaded to the "
    "finance portal together with the trip report.",
    "Office plants. The ficus in the lobby is watered on Mondays; the orchids near the kitchen only "
    "every second Thursday, with rain water.",
]


def text_document(paragraphs: list[str]) -> bytes:
    # Long enough to need several chunks at the default size (800 characters).
    return "\n\n".join(p + " " + p.split(". ", 1)[1] * 2 for p in paragraphs).encode()


def as_markdown(paragraphs: list[str]) -> bytes:
    parts = ["# Company handbook"]
    for p in paragraphs:
        title, body = p.split(". ", 1)
        parts.append(f"## {title}\n\n{body} {body}")
    return "\n\n".join(parts).encode()


def as_html(paragraphs: list[str]) -> bytes:
    sections = ""
    for p in paragraphs:
        title, body = p.split(". ", 1)
        sections += f"<section><h2>{title}</h2><p>{body} <em>{body}</em></p></section>"
    return (
        "<!doctype html><html><head><title>Handbook</title><style>p { color: red }</style></head>"
        f"<body>{sections}<script>var passwords = 'not text';</script></body></html>"
    ).encode()


async def test_knowledge_base_is_created_listed_and_read(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant, name="Support")
    listed = await api.http.get("/v1/knowledge-bases", headers=tenant.headers())
    got = await api.http.get(f"/v1/knowledge-bases/{kb_id}", headers=tenant.headers())

    assert listed.status_code == 200
    assert [kb["id"] for kb in listed.json()["items"]] == [kb_id]
    assert got.status_code == 200
    assert got.json()["name"] == "Support"


async def test_upload_is_accepted_as_queued_then_becomes_ready(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.upload(tenant, kb_id, "handbook.txt", text_document(HANDBOOK))

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["filename"] == "handbook.txt"
    assert accepted["content_type"] == "text/plain"
    assert accepted["size_bytes"] == len(text_document(HANDBOOK))
    doc = await api.settled(tenant, kb_id, accepted["id"])
    assert doc["status"] == "ready", doc
    assert doc["error"] is None
    assert doc["chunk_count"] >= 2
    listed = await api.http.get(f"/v1/knowledge-bases/{kb_id}/documents", headers=tenant.headers())
    assert [d["id"] for d in listed.json()["items"]] == [accepted["id"]]


@pytest.mark.parametrize(
    ("filename", "render"),
    [
        ("handbook.txt", text_document),
        ("handbook.md", as_markdown),
        ("handbook.html", as_html),
        ("handbook.pdf", None),
    ],
)
async def test_search_finds_the_passage_that_answers_first(
    api: KnowledgeApi,
    tenant: Tenant,
    filename: str,
    render: Callable[[list[str]], bytes] | None,
    make_pdf: Callable[[list[list[str]]], bytes],
) -> None:
    kb_id = await api.create_kb(tenant)
    content = render(HANDBOOK) if render else make_pdf([[p] for p in HANDBOOK])
    doc = await api.indexed(tenant, kb_id, filename, content)

    response = await api.search(tenant, kb_id, "How can I change my password?", top_k=3)

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert items, "nothing found"
    first = items[0]
    assert "reset link" in first["text"]
    assert first["document_id"] == doc["id"]
    assert first["document_name"] == filename
    assert first["chunk_id"] == f"{doc['id']}:{first['position']}"
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 1.0001
    assert "not text" not in " ".join(item["text"] for item in items)  # scripts are not content


async def test_search_ranks_by_meaning_not_by_shared_words(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant)
    await api.indexed(tenant, kb_id, "handbook.txt", text_document(HANDBOOK))

    items = (await api.search(tenant, kb_id, "how many days off do I get each year", top_k=1)).json()["items"]

    assert "vacation" in items[0]["text"]


async def test_document_larger_than_the_limit_is_refused_with_413(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.upload(tenant, kb_id, "big.txt", b"a" * (MAX_DOCUMENT_BYTES + 1))

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    listed = await api.http.get(f"/v1/knowledge-bases/{kb_id}/documents", headers=tenant.headers())
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("filename", "content", "needle"),
    [
        ("report.docx", b"PK\x03\x04 word document", "unsupported file type"),
        ("program.exe", b"MZ\x90\x00", "unsupported file type"),
        ("noextension", b"plain words", "unsupported file type"),
        ("fake.pdf", b"just some text pretending", "not a PDF"),
        ("notes.txt", b"%PDF-1.4\n binary pdf inside", "binary"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
        ("latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e and more text".encode("latin-1"), "not UTF-8"),
    ],
)
async def test_upload_of_the_wrong_type_is_refused_with_415(
    api: KnowledgeApi, tenant: Tenant, filename: str, content: bytes, needle: str
) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.upload(tenant, kb_id, filename, content, "application/octet-stream")

    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert needle in response.json()["error"]["message"]


async def test_upload_without_a_file_field_is_refused(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.http.post(
        f"/v1/knowledge-bases/{kb_id}/documents", data={"other": "x"}, headers=tenant.headers()
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("empty.txt", b"", "contains no text"),
        ("blank.md", b"  \n\n\t \n", "contains no text"),
        ("scripts-only.html", b"<html><script>alert(1)</script></html>", "contains no text"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "PDF could not be read"),
    ],
)
async def test_document_without_text_ends_failed_with_the_reason(
    api: KnowledgeApi, tenant: Tenant, filename: str, content: bytes, reason: str
) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.upload(tenant, kb_id, filename, content)

    assert response.status_code == 202, response.text
    doc = await api.settled(tenant, kb_id, response.json()["id"])
    assert doc["status"] == "failed"
    assert reason in doc["error"]
    assert doc["chunk_count"] == 0


async def test_pdf_without_a_text_layer_ends_failed(
    api: KnowledgeApi, tenant: Tenant, make_pdf: Callable[[list[list[str]]], bytes]
) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.upload(tenant, kb_id, "scan.pdf", make_pdf([[], []]))

    doc = await api.settled(tenant, kb_id, response.json()["id"])
    assert doc["status"] == "failed"
    assert "no extractable text" in doc["error"]


async def test_another_tenants_knowledge_base_is_not_found(
    api: KnowledgeApi, new_tenant: Callable[[], Tenant]
) -> None:
    owner, other = new_tenant(), new_tenant()
    kb_id = await api.create_kb(owner)
    doc = await api.indexed(owner, kb_id, "handbook.txt", text_document(HANDBOOK))
    base = f"/v1/knowledge-bases/{kb_id}"

    responses = [
        await api.http.get(base, headers=other.headers()),
        await api.http.get(f"{base}/documents", headers=other.headers()),
        await api.http.get(f"{base}/documents/{doc['id']}", headers=other.headers()),
        await api.upload(other, kb_id, "sneaky.txt", b"hello"),
        await api.search(other, kb_id, "password"),
    ]

    assert [r.status_code for r in responses] == [404] * 5
    assert all(r.json()["error"]["code"] == "not_found" for r in responses)
    listed = await api.http.get("/v1/knowledge-bases", headers=other.headers())
    assert listed.json()["items"] == []


async def test_search_returns_only_the_callers_own_chunks(
    api: KnowledgeApi, new_tenant: Callable[[], Tenant]
) -> None:
    first, second = new_tenant(), new_tenant()
    first_kb, second_kb = await api.create_kb(first), await api.create_kb(second)
    await api.indexed(first, first_kb, "handbook.txt", text_document(HANDBOOK))
    own = await api.indexed(second, second_kb, "plants.txt", text_document(HANDBOOK[3:]))

    items = (await api.search(second, second_kb, "How can I change my password?", top_k=50)).json()["items"]

    assert items
    assert {item["document_id"] for item in items} == {own["id"]}


async def test_unknown_and_malformed_ids_are_not_found(api: KnowledgeApi, tenant: Tenant) -> None:
    kb_id = await api.create_kb(tenant)

    responses = [
        await api.http.get("/v1/knowledge-bases/not-a-uuid", headers=tenant.headers()),
        await api.http.get(f"/v1/knowledge-bases/{kb_id}/documents/not-a-uuid", headers=tenant.headers()),
        await api.http.get(
            f"/v1/knowledge-bases/{kb_id}/documents/00000000-0000-0000-0000-000000000000",
            headers=tenant.headers(),
        ),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404]


@pytest.mark.parametrize(
    "body",
    [{"query": "", "top_k": 5}, {"query": "x", "top_k": 0}, {"query": "x", "top_k": 51}, {"top_k": 5}],
)
async def test_search_with_bad_input_is_422(api: KnowledgeApi, tenant: Tenant, body: dict[str, Any]) -> None:
    kb_id = await api.create_kb(tenant)

    response = await api.http.post(f"/v1/knowledge-bases/{kb_id}/search", json=body, headers=tenant.headers())

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_argument"


async def test_requests_without_a_signed_identity_are_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/knowledge-bases")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_readiness_checks_every_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "postgres": "ok",
        "rabbitmq": "ok",
        "s3": "ok",
        "milvus": "ok",
        "indexer": "ok",
    }


async def test_document_object_is_stored_under_the_tenant_prefix(
    api: KnowledgeApi, tenant: Tenant, db: asyncpg.Connection
) -> None:
    kb_id = await api.create_kb(tenant)
    response = await api.upload(tenant, kb_id, "../../etc/notes.md", b"# Notes\n\nSome notes.")

    doc_id = response.json()["id"]
    row = await db.fetchrow(
        "SELECT filename, object_key, object_version FROM documents WHERE id = $1::uuid", doc_id
    )
    assert row["filename"] == "notes.md"
    assert row["object_key"] == f"{tenant.id}/{kb_id}/{doc_id}/notes.md"
    assert row["object_version"]  # the bucket is versioned
