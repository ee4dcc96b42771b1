"""The gateway's REST relay: auth at the edge, identity and forwarding headers, errors, bodies."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from coca_platform.auth import REVOKED_SESSION_PREFIX
from coca_platform.identity import Identity
from coca_platform.testing import TokenIssuer, signed_headers

# Fixtures and stand-ins come from conftest.py (peers are ``Peer`` objects; see there).
Peer = Any
GatewayFactory = Any

pytestmark = pytest.mark.integration


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_is_proxied_with_the_callers_signed_identity(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Peer
) -> None:
    resp = await client.get("/v1/agents?limit=5", headers=_bearer(mint(sub="u-1", tid="t-1", role="admin")))

    assert resp.status_code == 200
    assert resp.json()["peer"] == "agent"
    [seen] = agent_peer.seen
    assert seen.path_qs == "/v1/agents?limit=5"
    assert seen.identity is not None
    assert (seen.identity.user_id, seen.identity.tenant_id, seen.identity.role) == ("u-1", "t-1", "admin")
    assert seen.identity.method == "jwt"


async def test_client_sent_identity_headers_never_reach_a_peer(
    client: httpx.AsyncClient,
    mint: Callable[..., str],
    agent_peer: Peer,
    user_peer: Peer,
    internal_secret: str,
) -> None:
    forged = signed_headers(Identity(tenant_id="victim", user_id="root", role="owner"), internal_secret)
    forged["X-Coca-Identity-Extra"] = "x"

    await client.get("/v1/agents", headers=forged | _bearer(mint(sub="u-me", tid="t-me")))
    await client.post("/v1/auth/login", headers=forged, json={"email": "a@b.c", "password": "pw"})

    assert agent_peer.seen[0].identity is not None
    assert (agent_peer.seen[0].identity.user_id, agent_peer.seen[0].identity.tenant_id) == ("u-me", "t-me")
    assert "X-Coca-Identity-Extra" not in agent_peer.seen[0].headers
    login = user_peer.seen[0]
    assert login.identity is None
    assert not any(k.lower().startswith("x-coca-") for k in login.headers)


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwdw==", "Bearer", "Bearer not-a-token"])
async def test_requests_without_a_valid_credential_are_401_and_not_proxied(
    client: httpx.AsyncClient, agent_peer: Peer, authorization: str | None
) -> None:
    resp = await client.get("/v1/agents", headers={"Authorization": authorization} if authorization else {})

    assert resp.status_code == 401
    assert resp.json()["error"]["code"] in ("unauthenticated", "invalid_token")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert agent_peer.seen == []


async def test_expired_and_foreign_tokens_are_401_with_their_codes(
    client: httpx.AsyncClient, mint: Callable[..., str], issuer: TokenIssuer, agent_peer: Peer
) -> None:
    now = int(time.time())
    expired = mint(exp=now - 60, iat=now - 600)
    foreign = TokenIssuer(kid=issuer.kid).mint()  # another key under the user service's kid

    expired_resp = await client.get("/v1/agents", headers=_bearer(expired))
    foreign_resp = await client.get("/v1/agents", headers=_bearer(foreign))

    assert (expired_resp.status_code, expired_resp.json()["error"]["code"]) == (401, "token_expired")
    assert (foreign_resp.status_code, foreign_resp.json()["error"]["code"]) == (401, "invalid_token")
    assert agent_peer.seen == []


@pytest.fixture
async def redis(infra: Any) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(infra.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_token_of_a_revoked_session_is_401(
    client: httpx.AsyncClient, mint: Callable[..., str], redis: aioredis.Redis
) -> None:
    sid = f"sess-{time.time_ns()}"
    token = mint(sid=sid)
    assert (await client.get("/v1/agents", headers=_bearer(token))).status_code == 200
    await redis.set(REVOKED_SESSION_PREFIX + sid, b"1", ex=60)

    resp = await client.get("/v1/agents", headers=_bearer(token))

    assert (resp.status_code, resp.json()["error"]["code"]) == (401, "session_revoked")


async def test_api_key_is_verified_once_and_proxied_as_its_owner(
    client: httpx.AsyncClient, user_peer: Peer, agent_peer: Peer
) -> None:
    key = f"coca_abcd{time.time_ns() % 10_000:04d}_{'s' * 43}"
    user_peer.api_keys[key] = {
        "tenant_id": "t-k",
        "user_id": "u-k",
        "role": "member",
        "scopes": ["x"],
        "api_key_id": "ak-1",
    }

    first = await client.get("/v1/agents", headers=_bearer(key))
    second = await client.get("/v1/agents", headers=_bearer(key))
    bad = await client.get("/v1/agents", headers=_bearer(key[:-1] + "t"))

    assert (first.status_code, second.status_code) == (200, 200)
    assert (bad.status_code, bad.json()["error"]["code"]) == (401, "invalid_api_key")
    assert user_peer.verify_calls == 2  # the good key once (then cached), the bad one once
    identity = agent_peer.seen[0].identity
    assert identity is not None
    assert (identity.method, identity.api_key_id, identity.user_id) == ("api_key", "ak-1", "u-k")


@pytest.mark.parametrize(
    "path",
    ["/v1/nothing", "/internal/v1/api-keys/verify", "/v1/agents/../../internal/v1/x", "/v1/agents/%2e%2e/x"],
)
async def test_unknown_and_path_trick_routes_are_404_and_not_proxied(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Peer, user_peer: Peer, path: str
) -> None:
    url = client.base_url.copy_with(raw_path=path.encode())
    resp = await client.send(client.build_request("GET", url, headers=_bearer(mint())))

    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    assert agent_peer.seen == user_peer.seen == []


async def test_public_routes_need_no_credential(client: httpx.AsyncClient, user_peer: Peer) -> None:
    login = await client.post("/v1/auth/login", json={"email": "a@b.c", "password": "pw"})
    jwks = await client.get("/.well-known/jwks.json")

    assert (login.status_code, login.json()["path"]) == (200, "/v1/auth/login")
    assert jwks.status_code == 200
    assert [s.path_qs for s in user_peer.seen] == ["/v1/auth/login"]  # the JWKS fake is not the echo


async def test_unreachable_peer_is_503_upstream_unavailable(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/channels/ch-1/inbound", json={"text": "hi"})  # public; channel is down

    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "upstream_unavailable"
    assert "channel" in resp.json()["error"]["message"]


async def test_silent_peer_is_504_upstream_timeout(
    start_gateway: GatewayFactory, mint: Callable[..., str]
) -> None:
    async with start_gateway(upstream_read_timeout_s=0.5) as base, httpx.AsyncClient(base_url=base) as http:
        resp = await http.get("/v1/agents/slow", headers=_bearer(mint()))

    assert (resp.status_code, resp.json()["error"]["code"]) == (504, "upstream_timeout")


async def test_request_id_is_kept_when_sane_and_replaced_otherwise(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Peer
) -> None:
    kept = await client.get("/v1/agents", headers=_bearer(mint()) | {"X-Request-ID": "req-abc_123"})
    replaced = await client.get("/v1/agents", headers=_bearer(mint()) | {"X-Request-ID": "bad id/" * 30})

    assert kept.headers["x-request-id"] == agent_peer.seen[0].headers["X-Request-ID"] == "req-abc_123"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    assert agent_peer.seen[1].headers["X-Request-ID"] == replaced.headers["x-request-id"]


async def test_forwarding_headers_trace_context_and_authorization_scope(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Peer, user_peer: Peer
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = _bearer(mint()) | {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}

    await client.get("/v1/agents", headers=headers)
    await client.get("/v1/users/me", headers=headers)

    agent_seen, user_seen = agent_peer.seen[0].headers, user_peer.seen[0].headers
    assert agent_seen["X-Forwarded-For"] == f"{client.headers['x-forwarded-for']}, 127.0.0.1"
    assert agent_seen["traceparent"].split("-")[1] == trace_id
    assert "Authorization" not in agent_seen  # peers get the signed identity, not the credential
    assert user_seen["Authorization"].startswith("Bearer ")  # the user service needs it (logout)


async def test_response_headers_lose_hop_by_hop_and_gain_the_remaining_allowance(
    client: httpx.AsyncClient, mint: Callable[..., str]
) -> None:
    resp = await client.get("/v1/agents", headers=_bearer(mint()))

    assert resp.headers["x-peer"] == "agent"
    assert "keep-alive" not in resp.headers
    assert "access-control-allow-origin" not in resp.headers  # the peer's CORS opinion is not relayed
    assert len(resp.headers.get_list("server")) == 1
    assert int(resp.headers["x-ratelimit-remaining"]) > 0


async def test_bodies_are_relayed_intact_small_and_streamed(
    client: httpx.AsyncClient, mint: Callable[..., str], agent_peer: Peer
) -> None:
    big = bytes(range(256)) * 12_000  # ~3 MiB, sent chunked

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65_536):
            yield big[i : i + 65_536]

    small = await client.post("/v1/agents", headers=_bearer(mint()), json={"name": "a"})
    large = await client.post("/v1/agents", headers=_bearer(mint()), content=chunks())

    assert (small.status_code, large.status_code) == (200, 200)
    assert agent_peer.seen[0].body == b'{"name":"a"}'
    assert agent_peer.seen[1].body == big


async def test_oversize_bodies_are_413_whether_declared_or_streamed(
    start_gateway: GatewayFactory, mint: Callable[..., str], agent_peer: Peer
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    async with start_gateway(max_body_bytes=4096) as base, httpx.AsyncClient(base_url=base) as http:
        declared = await http.post("/v1/agents", headers=_bearer(mint()), content=b"x" * 5000)
        streamed = await http.post("/v1/agents", headers=_bearer(mint()), content=chunks())

    assert (declared.status_code, declared.json()["error"]["code"]) == (413, "payload_too_large")
    assert streamed.status_code == 413
    assert all(len(s.body) <= 4096 for s in agent_peer.seen)


async def test_each_request_logs_one_access_line_and_counts_under_its_route_prefix(
    client: httpx.AsyncClient, mint: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coca_gateway.proxy")

    await client.get("/v1/agents/a-1", headers=_bearer(mint()) | {"X-Request-ID": "access-1"})
    metrics = await client.get("/metrics")

    [line] = [
        r
        for r in caplog.records
        if r.getMessage() == "request completed" and r.data["request_id"] == "access-1"
    ]
    assert line.data["route"] == "/v1/agents"
    assert (line.data["method"], line.data["status"]) == ("GET", 200)
    assert line.data["duration_ms"] >= 0
    assert 'route="/v1/agents"' in metrics.text
