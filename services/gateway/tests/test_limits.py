"""Rate limits: per client IP (stricter on the auth routes), per user, per API key; 429 + Retry-After."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from coca_gateway.ratelimit import Limit, RateLimiter
from coca_platform.testing import free_port

pytestmark = pytest.mark.integration


def _ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 251}.{n // 251 % 251}.{n // 63001 % 251}"


def _assert_rate_limited(resp: httpx.Response) -> None:
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["x-ratelimit-remaining"] == "0"


async def test_client_ip_over_its_limit_gets_429_with_retry_after(
    start_gateway: Any, mint: Callable[..., str], agent_peer: Any
) -> None:
    async with (
        start_gateway(rate_limit_ip_per_min=3) as base,
        httpx.AsyncClient(base_url=base, headers={"X-Forwarded-For": _ip()}) as http,
    ):
        token = {"Authorization": f"Bearer {mint()}"}
        allowed = [await http.get("/v1/agents", headers=token) for _ in range(3)]
        denied = await http.get("/v1/agents", headers=token)
        unauthenticated = await http.get("/v1/agents")  # the IP limit comes before the credential check
        other_ip = await http.get("/v1/agents", headers=token | {"X-Forwarded-For": _ip()})

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining"] for r in allowed] == ["2", "1", "0"]
    _assert_rate_limited(denied)
    _assert_rate_limited(unauthenticated)
    assert other_ip.status_code == 200
    assert len(agent_peer.seen) == 4


async def test_auth_routes_have_a_stricter_per_ip_limit(start_gateway: Any, mint: Callable[..., str]) -> None:
    async with (
        start_gateway(rate_limit_auth_ip_per_min=2) as base,
        httpx.AsyncClient(base_url=base, headers={"X-Forwarded-For": _ip()}) as http,
    ):
        logins = [
            await http.post("/v1/auth/login", json={"email": "a@b.c", "password": "x"}) for _ in range(3)
        ]
        api = await http.get("/v1/agents", headers={"Authorization": f"Bearer {mint()}"})

    assert [r.status_code for r in logins[:2]] == [200, 200]
    _assert_rate_limited(logins[2])
    assert api.status_code == 200  # the rest of the API is not held to the login limit


async def test_user_over_its_limit_gets_429_from_any_ip(start_gateway: Any, mint: Callable[..., str]) -> None:
    user = f"u-{uuid.uuid4().hex}"
    async with start_gateway(rate_limit_user_per_min=2) as base, httpx.AsyncClient(base_url=base) as http:
        results = [
            await http.get(
                "/v1/agents", headers={"Authorization": f"Bearer {mint(sub=user)}", "X-Forwarded-For": _ip()}
            )
            for _ in range(3)
        ]
        someone_else = await http.get("/v1/agents", headers={"Authorization": f"Bearer {mint()}"})

    assert [r.status_code for r in results[:2]] == [200, 200]
    _assert_rate_limited(results[2])
    assert someone_else.status_code == 200


async def test_api_key_over_its_limit_gets_429(start_gateway: Any, user_peer: Any) -> None:
    key = f"coca_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
    user_peer.api_keys[key] = {"tenant_id": "t", "user_id": "u", "api_key_id": f"ak-{uuid.uuid4().hex}"}
    async with start_gateway(rate_limit_key_per_min=1) as base, httpx.AsyncClient(base_url=base) as http:
        first = await http.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})
        second = await http.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})

    assert first.status_code == 200
    _assert_rate_limited(second)


async def test_denied_check_charges_none_of_its_buckets(infra: Any) -> None:
    client = aioredis.from_url(infra.redis_url)
    try:
        limiter = RateLimiter(client, prefix=f"coca:rl-test:{uuid.uuid4().hex}:")
        roomy, tight = Limit("roomy", 10), Limit("tight", 1)
        assert (await limiter.check(roomy, tight)).allowed
        assert not (await limiter.check(roomy, tight)).allowed

        alone = await limiter.check(roomy)
    finally:
        await client.aclose()

    assert alone.allowed
    assert alone.remaining == 8  # 10, minus the one allowed joint check and this one


async def test_limits_fail_open_with_a_warning_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    caplog.set_level(logging.WARNING, logger="coca_gateway.ratelimit")
    try:
        decisions = [await RateLimiter(dead).check(Limit("ip:10.0.0.1", 1)) for _ in range(3)]
    finally:
        await dead.aclose()

    assert all(d.allowed and d.remaining is None for d in decisions)
    assert any("rate limits unchecked" in r.getMessage() for r in caplog.records)
