"""The HTTP edge every service shares: app factory, error model, health, readiness, metrics.

``create_app(settings, lifespan)`` returns a FastAPI app with:
- errors rendered as ``{"error": {"code", "message", "trace_id"}}`` (CocaError, validation,
  malformed JSON, unknown routes, and a 500 that never leaks the exception text);
- ``GET /healthz`` (process alive), ``GET /readyz`` (each dependency checked), ``GET /metrics``;
- a body-size limit (``MAX_BODY_BYTES``), request ids, Prometheus RED metrics, OTel server spans.

A lifespan yields a state mapping; ``readiness`` in it maps a dependency name to an async check.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coca_platform.errors import CocaError, PayloadTooLarge, QuotaExceeded
from coca_platform.settings import PlatformSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Any]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]]

HTTP_REQUESTS = Counter(
    "coca_http_requests_total", "HTTP requests served", ["service", "method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "coca_http_request_duration_seconds",
    "HTTP request duration (to the end of the response body)",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def error_body(code: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {"error": {"code": code, "message": message, "trace_id": current_trace_id(), **extra}}
    )


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(error_body(code, message), status, headers=headers, media_type="application/json")


def _coca_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CocaError)
    headers = {}
    if isinstance(exc, QuotaExceeded) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return error_response(exc.http_status, exc.code, exc.message, headers)


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "bad_request", "request body is not valid JSON")
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(first['loc'][1:]) or 'request'}: {first['msg']}"
    return Response(
        orjson.dumps(
            {
                "error": {
                    "code": "invalid_argument",
                    "message": message,
                    "trace_id": current_trace_id(),
                    "details": details,
                }
            }
        ),
        422,
        media_type="application/json",
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route"
    return error_response(exc.status_code, code, message, exc.headers)


class UnhandledErrorMiddleware:
    """Any exception that is not a CocaError is a bug: log it once with its traceback and answer 500
    without its text. (Starlette's own handler re-raises to the server, which would log it twice.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"data": {"path": scope.get("path")}})
            if not started:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": error_body("internal", "internal error")})


class BodyLimitMiddleware:
    """Reject bodies over ``limit`` bytes with 413, by Content-Length up front or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _send_413(send, self.limit)
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"request body exceeds {self.limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if not started:
                await _send_413(send, self.limit)


async def _send_413(send: Send, limit: int) -> None:
    body = error_body("payload_too_large", f"request body exceeds {limit} bytes")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """RED metrics per route template, plus an ``X-Request-ID`` on every response."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        request_id = (
            next((v for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex.encode()
        )

        async def wrapped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id[:128])]
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("unmatched" if status == 404 else "other")
            HTTP_REQUESTS.labels(self.service, scope["method"], path, str(status)).inc()
            HTTP_DURATION.labels(self.service, scope["method"], path).observe(time.perf_counter() - start)


async def _run_checks(checks: Mapping[str, ReadinessCheck], timeout: float) -> dict[str, str]:
    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout)
        except Exception as exc:
            return f"failed: {type(exc).__name__}"
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


def create_app(
    settings: PlatformSettings, lifespan: Lifespan | None = None, **fastapi_kwargs: Any
) -> FastAPI:
    """The FastAPI app every service starts from; the service adds its routers."""

    async def default_lifespan(_: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        yield {}

    app = FastAPI(
        title=f"coca-{settings.service_name}",
        lifespan=lifespan or _as_cm(default_lifespan),
        **fastapi_kwargs,
    )
    app.state.settings = settings
    app.add_exception_handler(CocaError, _coca_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        checks: Mapping[str, ReadinessCheck] = getattr(request.state, "readiness", None) or {}
        results = await _run_checks(checks, settings.readiness_timeout_s)
        ok = all(r == "ok" for r in results.values())
        body = {"status": "ok" if ok else "unavailable", "checks": results}
        return Response(orjson.dumps(body), 200 if ok else 503, media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    app.add_middleware(OpenTelemetryMiddleware, exclude_spans=["receive", "send"])
    return app


def state_resources(request: Request) -> Any:
    """FastAPI dependency: the resources the service's lifespan yielded as ``resources``; a service
    declares ``ResourcesDep = Annotated[Resources, Depends(web.state_resources)]``."""
    return request.state.resources


def _as_cm(fn: Callable[[FastAPI], AsyncIterator[Mapping[str, Any]]]) -> Lifespan:
    from contextlib import asynccontextmanager

    return asynccontextmanager(fn)


def serve(app: ASGIApp, settings: PlatformSettings, **uvicorn_options: Any) -> None:
    """Run one service process: uvicorn with uvloop + httptools, logging left to ours.
    ``uvicorn_options`` override the defaults (e.g. ``ws_ping_interval``, ``ws_max_size``)."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options,
    )
