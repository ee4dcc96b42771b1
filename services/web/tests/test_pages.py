"""The pages of the browser UI: rendered, linked to the static files that exist, protected by the
security headers, and a page for addresses that do not exist."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from html.parser import HTMLParser

import httpx
import pytest

# Fixtures come from conftest.py: `client` (the app in-process), `make_client(**settings)` (an app with
# other settings), `gateway_url` (the GATEWAY_PUBLIC_URL the default app has).
ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

PAGES = [
    "/login",
    "/signup",
    "/agents",
    f"/conversations/{uuid.uuid4()}",
    "/knowledge",
    f"/knowledge/{uuid.uuid4()}",
    "/usage",
]
HTML = {"Accept": "text/html,application/xhtml+xml"}


class _Tags(HTMLParser):
    """The tags of a page with their attributes; inline scripts and styles are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if tag == "script" and not dict(attrs).get("src"):
            self.inline_scripts += 1

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def parse(html: str) -> _Tags:
    tags = _Tags()
    tags.feed(html)
    return tags


@pytest.mark.parametrize("path", PAGES)
async def test_each_page_renders_with_its_scripts_and_no_inline_code(
    client: httpx.AsyncClient, gateway_url: str, path: str
) -> None:
    response = await client.get(path, headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    page = parse(response.text)
    scripts = [a["src"] for tag, a in page.tags if tag == "script"]
    assert scripts[0].startswith("/static/js/coca.js?v=")
    assert len(scripts) == 2  # the shared script and the page's own
    assert page.inline_scripts == 0
    assert not [a for _, a in page.tags if any(k.startswith("on") or k == "style" for k in a)]
    body = next(a for tag, a in page.tags if tag == "body")
    assert body["data-gateway"] == gateway_url


async def test_every_static_file_a_page_links_is_served(client: httpx.AsyncClient) -> None:
    linked: set[str] = set()
    for path in PAGES:
        page = parse((await client.get(path)).text)
        linked |= {
            a.get("src") or a.get("href") or "" for t, a in page.tags if t in ("script", "link", "img")
        }
    static = sorted(url for url in linked if url.startswith("/static/"))
    assert len(static) >= 8
    for url in static:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content


async def test_pages_of_the_signed_in_user_ask_for_a_session_and_public_ones_do_not(
    client: httpx.AsyncClient,
) -> None:
    agents = next(a for t, a in parse((await client.get("/agents")).text).tags if t == "body")
    login = next(a for t, a in parse((await client.get("/login")).text).tags if t == "body")
    assert agents.get("data-auth") == "required"
    assert "data-auth" not in login


async def test_chat_page_carries_the_conversation_id(client: httpx.AsyncClient) -> None:
    conversation_id = uuid.uuid4()
    page = parse((await client.get(f"/conversations/{conversation_id}")).text)
    body = next(a for t, a in page.tags if t == "body")
    assert body["data-conversation-id"] == str(conversation_id)


async def test_home_sends_the_browser_to_the_agents(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/agents"


async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, gateway_url: str
) -> None:
    for path in ["/login", "/static/css/app.css", "/no-such-page", "/healthz"]:
        response = await client.get(path, headers=HTML)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self';" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert f"connect-src 'self' {gateway_url};" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_gateway_on_the_same_origin_adds_nothing_to_connect_src(make_client: ClientFactory) -> None:
    async with make_client(gateway_public_url="") as client:
        response = await client.get("/login")
    assert "connect-src 'self';" in response.headers["content-security-policy"]
    body = next(a for t, a in parse(response.text).tags if t == "body")
    assert body["data-gateway"] == ""


async def test_the_gateway_url_keeps_only_its_origin_in_the_policy(make_client: ClientFactory) -> None:
    async with make_client(gateway_public_url="https://example.com/api/") as client:
        response = await client.get("/login")
    assert "connect-src 'self' https://example.com;" in response.headers["content-security-policy"]
    body = next(a for t, a in parse(response.text).tags if t == "body")
    assert body["data-gateway"] == "https://example.com/api"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://example.com", "https://u:p@example.com"])
def test_settings_refuse_a_gateway_url_that_is_not_a_plain_http_url(url: str) -> None:
    from coca_web.settings import Settings
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="gateway_public_url"):
        Settings(gateway_public_url=url)


@pytest.mark.parametrize("path", ["/no-such-page", "/agents/extra/segments", "/conversations/not-a-uuid"])
async def test_a_browser_asking_for_an_unknown_page_gets_the_not_found_page(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers=HTML)
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Page not found" in response.text
    assert re.search(r'<link rel="stylesheet" href="/static/css/app\.css\?v=[0-9a-f]{16}">', response.text)


async def test_a_program_asking_for_an_unknown_path_gets_the_json_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-page", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_health_readiness_and_metrics_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    await client.get("/login")
    metrics = (await client.get("/metrics")).text
    assert 'coca_http_requests_total{method="GET",route="/login",service="web",status="200"}' in metrics


def test_production_refuses_the_development_gateway_url() -> None:
    from coca_web.settings import Settings

    with pytest.raises(SystemExit, match="GATEWAY_PUBLIC_URL"):
        Settings(environment="prod", internal_secret="s" * 32).check_production()
    Settings(
        environment="prod", internal_secret="s" * 32, gateway_public_url="https://api.example.com"
    ).check_production()
