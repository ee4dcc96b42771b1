"""SSRF-safe outbound HTTP against real local servers: what the default policy refuses (after DNS,
at connect time and on every redirect), what an operator's allow-list admits, and the limits."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from coca_platform.egress import (
    EgressPolicy,
    EgressRefusedError,
    EgressSettings,
    ResponseTooLarge,
    check_url,
    egress_session,
    refusal_reason,
    safe_request,
)
from coca_platform.errors import DeadlineExceeded, InvalidArgument, Unavailable
from coca_platform.testing import free_port, serve_aiohttp

DEFAULT = EgressPolicy()
LOCAL = EgressPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
LIMIT = 64 * 1024


class Target:
    """A local endpoint that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.url = ""
        self.redirect_to = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_route("*", "/see-other", self._see_other)
        app.router.add_get("/loop", self._loop)
        app.router.add_get("/big", self._big)
        app.router.add_get("/big-chunked", self._big_chunked)
        app.router.add_get("/slow", self._slow)
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, await request.text(), dict(request.headers)))
        return web.json_response({"ok": True})

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(self.redirect_to)

    async def _see_other(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/echo")

    async def _loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (LIMIT + 1))

    async def _big_chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(LIMIT // 1024 + 2):
            await response.write(b"y" * 1024)
        await response.write_eof()
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    served = Target()
    async with serve_aiohttp(served.app()) as url:
        served.url = url
        yield served


@pytest.fixture
async def other() -> AsyncIterator[Target]:
    served = Target()
    async with serve_aiohttp(served.app()) as url:
        served.url = url
        yield served


async def _get(policy: EgressPolicy, url: str, **kwargs: object) -> tuple[int, bytes]:
    async with egress_session(policy, timeout_s=5) as session:
        status, _, body = await safe_request(
            session, "GET", url, policy=policy, max_response_bytes=LIMIT, **kwargs
        )
        return status, body


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared"),
        ("169.254.169.254", "link_local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("::ffff:169.254.169.254", "link_local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_reason_classifies_addresses(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


def test_policy_parses_names_addresses_and_networks() -> None:
    policy = EgressPolicy.parse(allowed_hosts=" api.internal ,127.0.0.1, 10.8.0.0/16,")
    assert policy.host_allowed("API.internal.")
    assert not policy.host_allowed("other.internal")
    assert policy.check_address(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.check_address(ipaddress.ip_address("10.8.3.4")) is None
    assert policy.check_address(ipaddress.ip_address("10.9.0.1")) == "private"


def test_allow_private_never_admits_link_local() -> None:
    policy = EgressPolicy(allow_private=True)
    assert policy.check_address(ipaddress.ip_address("192.168.0.10")) is None
    assert policy.check_address(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.check_address(ipaddress.ip_address("169.254.169.254")) == "link_local"


def test_egress_settings_build_the_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("EGRESS_ALLOWED_HOSTS", "hooks.internal,169.254.169.254")
    policy = EgressSettings().egress_policy()
    assert policy.allow_private
    assert policy.host_allowed("hooks.internal")
    assert policy.check_address(ipaddress.ip_address("169.254.169.254")) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "http:///nohost",
        "gopher://x",
    ],
)
def test_check_url_refuses_other_schemes_credentials_and_missing_hosts(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_url(url, DEFAULT)
    assert caught.value.code == "egress_refused"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/echo",
        "http://[::1]:{port}/echo",
        "http://0.0.0.0:{port}/echo",
    ],
)
async def test_default_policy_refuses_loopback_and_metadata_addresses(target: Target, url: str) -> None:
    port = target.url.rsplit(":", 1)[1]
    with pytest.raises(InvalidArgument) as caught:
        await _get(DEFAULT, url.format(port=port))
    assert caught.value.code == "egress_refused"
    assert target.seen == []


async def test_default_policy_refuses_a_name_that_resolves_to_loopback(target: Target) -> None:
    port = target.url.rsplit(":", 1)[1]
    with pytest.raises(InvalidArgument, match="loopback") as caught:
        await _get(DEFAULT, f"http://localhost:{port}/echo")
    assert caught.value.code == "egress_refused"
    assert target.seen == []


async def test_the_session_itself_refuses_at_connect_time_without_safe_request(target: Target) -> None:
    async with egress_session(DEFAULT, timeout_s=5) as session:
        for url in (f"{target.url}/echo", target.url.replace("127.0.0.1", "localhost") + "/echo"):
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await session.get(url)
            assert isinstance(caught.value.os_error, EgressRefusedError)
    assert target.seen == []


async def test_allow_listed_address_is_reached(target: Target) -> None:
    status, body = await _get(LOCAL, f"{target.url}/echo")
    assert (status, body) == (200, b'{"ok": true}')
    assert len(target.seen) == 1


async def test_allow_listed_name_is_reached_whatever_it_resolves_to(target: Target) -> None:
    policy = EgressPolicy(allowed_hosts=frozenset({"localhost"}))
    status, _ = await _get(policy, target.url.replace("127.0.0.1", "localhost") + "/echo")
    assert status == 200


async def test_allow_private_reaches_loopback(target: Target) -> None:
    status, _ = await _get(EgressPolicy(allow_private=True), f"{target.url}/echo")
    assert status == 200


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:{port}/echo", "http://[::1]:{port}/echo"],
)
async def test_redirect_to_a_private_address_is_refused(target: Target, location: str) -> None:
    target.redirect_to = location.format(port=target.url.rsplit(":", 1)[1])
    with pytest.raises(InvalidArgument) as caught:
        await _get(LOCAL, f"{target.url}/redirect")
    assert caught.value.code == "egress_refused"
    assert target.seen == []


async def test_redirect_to_another_origin_drops_credentials(target: Target, other: Target) -> None:
    target.redirect_to = f"{other.url.replace('127.0.0.1', 'localhost')}/echo"
    policy = EgressPolicy(allowed_hosts=frozenset({"127.0.0.1", "localhost"}))
    async with egress_session(policy, timeout_s=5) as session:
        status, _, _ = await safe_request(
            session,
            "POST",
            f"{target.url}/redirect",
            policy=policy,
            max_response_bytes=LIMIT,
            data=b"payload",
            headers={"Authorization": "Bearer s3cret", "X-Trace": "kept"},
        )
    assert status == 200
    ((method, body, headers),) = other.seen
    assert (method, body) == ("POST", "payload")  # 307 keeps method and body
    assert "Authorization" not in headers
    assert headers["X-Trace"] == "kept"


async def test_same_origin_redirect_keeps_credentials_and_303_becomes_get(target: Target) -> None:
    async with egress_session(LOCAL, timeout_s=5) as session:
        status, _, _ = await safe_request(
            session,
            "POST",
            f"{target.url}/see-other",
            policy=LOCAL,
            max_response_bytes=LIMIT,
            json={"a": 1},
            headers={"Authorization": "Bearer s3cret"},
        )
    assert status == 200
    ((method, body, headers),) = target.seen
    assert (method, body) == ("GET", "")
    assert headers["Authorization"] == "Bearer s3cret"


async def test_too_many_redirects_is_unavailable(target: Target) -> None:
    with pytest.raises(Unavailable) as caught:
        await _get(LOCAL, f"{target.url}/loop")
    assert caught.value.code == "too_many_redirects"


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_response_over_the_limit_is_refused(target: Target, path: str) -> None:
    with pytest.raises(ResponseTooLarge) as caught:
        await _get(LOCAL, f"{target.url}{path}")
    assert caught.value.code == "response_too_large"
    assert caught.value.status == 200


async def test_slow_destination_is_a_deadline_exceeded(target: Target) -> None:
    with pytest.raises(DeadlineExceeded):
        await _get(LOCAL, f"{target.url}/slow", timeout_s=0.3)


async def test_closed_port_is_unavailable() -> None:
    with pytest.raises(Unavailable) as caught:
        await _get(LOCAL, f"http://127.0.0.1:{free_port()}/")
    assert caught.value.code == "unavailable"


async def test_allow_listing_a_name_does_not_admit_loopback_or_metadata_literals(target: Target) -> None:
    """The end-to-end setup: tools on ``localhost`` work, 127.0.0.1 and 169.254.169.254 stay refused."""
    policy = EgressPolicy.parse(allowed_hosts="localhost")
    port = target.url.rsplit(":", 1)[1]
    status, _ = await _get(policy, f"http://localhost:{port}/echo")
    assert status == 200
    for url in (f"http://127.0.0.1:{port}/echo", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(InvalidArgument) as caught:
            await _get(policy, url)
        assert caught.value.code == "egress_refused"
