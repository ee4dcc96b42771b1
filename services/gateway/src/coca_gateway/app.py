"""Gateway wiring: the platform app (health, readiness, metrics, error model, body limit, request ids,
OTel server spans) with CORS, and every other path handed to the plain-ASGI :class:`Gateway`.

Readiness: Redis answers and the user service's JWKS can be fetched.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import web
from coca_platform.auth import Authenticator
from coca_platform.cache import open_redis, ping
from coca_platform.errors import CocaError
from coca_platform.httpclient import open_http_session
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from coca_gateway.forwarding import RequestIdMiddleware
from coca_gateway.proxy import Gateway
from coca_gateway.ratelimit import RateLimiter
from coca_gateway.routing import RoutingTable
from coca_gateway.settings import Settings

log = logging.getLogger(__name__)

_CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "Last-Event-ID",
    "X-Request-ID",
    "traceparent",
    "tracestate",
]
_CORS_EXPOSED = ["X-Request-ID", "Retry-After", "X-RateLimit-Remaining", "Location", "Content-Disposition"]


async def _gateway_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The catch-all mounted at ``/``: the lifespan's ``Gateway`` serves it."""
    gateway: Gateway = scope["state"]["gateway"]
    await gateway(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        async with AsyncExitStack() as stack:
            redis = await stack.enter_async_context(open_redis(settings.redis_url))
            http = await stack.enter_async_context(
                open_http_session(
                    timeout_s=10.0,
                    limit=settings.upstream_pool_size,
                    connect_timeout_s=settings.upstream_connect_timeout_s,
                )
            )
            authenticator = Authenticator(
                http,
                redis,
                user_service_url=settings.user_service_addr,
                internal_secret=settings.internal_secret.get_secret_value().encode(),
                jwks_ttl_s=settings.jwks_ttl_s,
                api_key_cache_ttl_s=settings.api_key_cache_ttl_s,
            )
            try:  # warm the key cache; the gateway still starts (not ready) without the user service
                await authenticator.check_jwks()
            except CocaError as exc:
                log.warning("user service JWKS not loaded at startup", extra={"data": {"error": exc.message}})
            gateway = Gateway(
                settings,
                http=http,
                authenticator=authenticator,
                limiter=RateLimiter(redis, timeout_s=settings.rate_limit_redis_timeout_s),
                routes=RoutingTable(
                    {
                        "user": settings.user_service_addr,
                        "agent": settings.agent_service_addr,
                        "channel": settings.channel_service_addr,
                        "memory": settings.memory_service_addr,
                        "billing": settings.billing_service_addr,
                        "plugin": settings.plugin_service_addr,
                    }
                ),
            )
            yield {
                "gateway": gateway,
                "readiness": {"redis": partial(ping, redis), "user_service_jwks": authenticator.check_jwks},
            }

    app = web.create_app(settings, lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/", _gateway_app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=_CORS_HEADERS,
        expose_headers=_CORS_EXPOSED,
        max_age=600,
    )
    app.add_middleware(RequestIdMiddleware)
    return app
