"""Static files: served from the package with their content types, cached for a year under a
versioned URL, revalidated otherwise."""

from __future__ import annotations

import hashlib
import importlib.resources

import httpx
import pytest

TYPES = {
    "css/app.css": "text/css; charset=utf-8",
    "js/coca.js": "text/javascript; charset=utf-8",
    "js/chat.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def version_of(path: str) -> str:
    body = (importlib.resources.files("coca_web") / "static" / path).read_bytes()
    return hashlib.sha256(body).hexdigest()[:16]


@pytest.mark.parametrize(("path", "content_type"), TYPES.items())
async def test_static_files_are_served_with_their_content_type(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(f"/static/{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (importlib.resources.files("coca_web") / "static" / path).read_bytes()


async def test_a_versioned_url_is_cached_for_a_year(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/static/css/app.css?v={version_of('css/app.css')}")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"] == f'"{version_of("css/app.css")}"'


async def test_an_unversioned_or_stale_url_is_revalidated(client: httpx.AsyncClient) -> None:
    for url in ["/static/css/app.css", "/static/css/app.css?v=0000000000000000"]:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"


async def test_a_matching_etag_gets_304_without_a_body(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/static/js/coca.js")).headers["etag"]
    response = await client.get("/static/js/coca.js", headers={"If-None-Match": f'W/{etag}, "other"'})
    assert response.status_code == 304
    assert response.content == b""
    changed = await client.get("/static/js/coca.js", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200


async def test_head_gives_the_length_without_the_body(client: httpx.AsyncClient) -> None:
    full = await client.get("/static/js/chat.js")
    head = await client.head("/static/js/chat.js")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(full.content))


@pytest.mark.parametrize(
    "path", ["/static/nope.css", "/static/../settings.py", "/static/%2e%2e/app.py", "/static/js"]
)
async def test_anything_else_under_static_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
