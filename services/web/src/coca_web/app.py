"""Wiring of the web service: the platform app (health, readiness, metrics, error model) serving the
browser UI's pages and static files, with security headers on every response and an HTML 404 page
for browsers.

The browser calls the public API on the gateway (``GATEWAY_PUBLIC_URL``) directly; this service never
sees a user's token. It has no dependencies of its own, so it is ready as soon as it serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from coca_platform import web
from coca_platform.errors import CocaError, NotFound
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from coca_web import pages
from coca_web.resources import open_resources
from coca_web.security import SecurityHeadersMiddleware
from coca_web.settings import Settings

Handler = Callable[[Request, Exception], Any]


def _html_not_found(fallback: Handler) -> Handler:
    """A browser navigating to a page that does not exist gets a page saying so; API-style callers
    (and anything else that goes wrong) get the platform's JSON error."""

    def handle(request: Request, exc: Exception) -> Any:
        missing = isinstance(exc, NotFound) or (
            isinstance(exc, StarletteHTTPException) and exc.status_code == 404
        )
        if missing and "text/html" in request.headers.get("accept", ""):
            return pages.render(request, "not_found.html", 404, page="not_found", title="Page not found")
        return fallback(request, exc)

    return handle


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(settings) as res:
            yield {"resources": res, "readiness": {}}

    app = web.create_app(settings, lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    for exc_class in (StarletteHTTPException, NotFound):
        fallback = app.exception_handlers.get(exc_class) or app.exception_handlers[CocaError]
        app.add_exception_handler(exc_class, _html_not_found(fallback))
    app.include_router(pages.router)
    app.add_middleware(SecurityHeadersMiddleware, gateway_origin=settings.gateway_origin)
    return app
