"""Liveness and readiness: ready means Redis answers and the user service's JWKS can be fetched."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coca_platform.testing import free_port

pytestmark = pytest.mark.integration


async def test_gateway_is_ready_with_redis_and_the_user_service_up(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "user_service_jwks": "ok"}


async def test_gateway_starts_but_is_not_ready_without_the_user_service(start_gateway: Any) -> None:
    async with (
        start_gateway(user_service_addr=f"127.0.0.1:{free_port()}") as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        login = await http.post("/v1/auth/login", json={})

    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["user_service_jwks"].startswith("failed")
    assert (login.status_code, login.json()["error"]["code"]) == (503, "upstream_unavailable")
