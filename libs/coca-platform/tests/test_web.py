"""The shared HTTP edge: error model, health, readiness, metrics, body limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from coca_platform import web
from coca_platform.errors import NotFound, RateLimited
from coca_platform.identity import Identity, IdentityDep
from coca_platform.settings import PlatformSettings
from coca_platform.testing import asgi_client, signed_headers
from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    name: str


async def _ok() -> None:
    return None


async def _broken() -> None:
    raise ConnectionRefusedError("db down")


def make_app(readiness: Mapping[str, Any] | None = None, max_body: int = 2048) -> FastAPI:
    settings = PlatformSettings(service_name="t", max_body_bytes=max_body)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"readiness": readiness or {}}

    app = web.create_app(settings, lifespan=lifespan)

    @app.post("/v1/items", status_code=201)
    async def create(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.get("/v1/missing")
    async def missing() -> None:
        raise NotFound("item 'x' not found")

    @app.get("/v1/limited")
    async def limited() -> None:
        raise RateLimited("slow down", retry_after=7)

    @app.get("/v1/bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    @app.get("/v1/whoami")
    async def whoami(identity: IdentityDep) -> dict[str, str]:
        return {"tenant": identity.tenant_id}

    return app


async def test_domain_error_renders_error_model_with_status() -> None:
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/missing")
    assert resp.status_code == 404
    body = resp.json()["error"]
    assert body["code"] == "not_found"
    assert body["message"] == "item 'x' not found"
    assert "trace_id" in body


async def test_rate_limited_error_sets_retry_after() -> None:
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/limited")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"


async def test_malformed_json_is_400_and_missing_field_is_422() -> None:
    async with asgi_client(make_app()) as client:
        bad = await client.post(
            "/v1/items", content=b"{not json", headers={"content-type": "application/json"}
        )
        missing = await client.post("/v1/items", json={})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "bad_request"
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "invalid_argument"
    assert "name" in missing.json()["error"]["message"]


async def test_unknown_route_is_404_json() -> None:
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


async def test_unexpected_exception_is_500_without_leaking_text() -> None:
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/bug")
    assert resp.status_code == 500
    assert "secret internals" not in resp.text
    assert resp.json()["error"]["code"] == "internal"


async def test_oversized_body_is_413() -> None:
    async with asgi_client(make_app(max_body=2048)) as client:
        resp = await client.post(
            "/v1/items",
            content=b'{"name":"' + b"x" * 5000 + b'"}',
            headers={"content-type": "application/json"},
        )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


async def test_readyz_reports_each_dependency() -> None:
    async with asgi_client(make_app({"db": _broken, "cache": _ok})) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"] == {"db": "failed: ConnectionRefusedError", "cache": "ok"}


async def test_healthz_and_metrics_answer() -> None:
    async with asgi_client(make_app({"cache": _ok})) as client:
        await client.get("/v1/missing")
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert (
        'coca_http_requests_total{method="GET",route="/v1/missing",service="t",status="404"}' in metrics.text
    )


@pytest.mark.parametrize("headers", [{}, {"x-coca-identity": "e30", "x-coca-identity-signature": "00"}])
async def test_identity_headers_are_required_and_verified(headers: dict[str, str]) -> None:
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/whoami", headers=headers)
    assert resp.status_code == 401


async def test_signed_identity_reaches_handler() -> None:
    secret = PlatformSettings(service_name="t").internal_secret.get_secret_value()
    headers = signed_headers(Identity(tenant_id="ten-1", user_id="u-1"), secret)
    async with asgi_client(make_app()) as client:
        resp = await client.get("/v1/whoami", headers=headers)
    assert resp.json() == {"tenant": "ten-1"}


def test_log_lines_never_carry_tokens_from_urls() -> None:
    import io
    import json
    import logging

    from coca_platform.observability import configure_logging

    stream = io.StringIO()
    configure_logging(PlatformSettings(service_name="t"), stream=stream)
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws?token=eyJabc.def&x=1"
    )
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert "eyJabc" not in line["message"]
    assert "token=[redacted]&x=1" in line["message"]
    assert line["service"] == "t"
    assert set(line) == {"timestamp", "level", "service", "traceId", "spanId", "message", "data"}
