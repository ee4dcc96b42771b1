"""Stand-ins for peers at their HTTP boundary, served by aiohttp on a free port, and real services
served by uvicorn on a free port (:func:`serve_asgi`).

:class:`FakeUserService` is the user service as the gateways and :mod:`coca_platform.auth` see it: the
JWKS of its :class:`~coca_platform.testing.tokens.TokenIssuer` s and, given the internal secret, the
internal API-key verify endpoint. Tests add routes of their own with :meth:`FakeUserService.add_routes`
on an app they build, or subclass it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, Self

from aiohttp import web

from coca_platform.errors import Unauthenticated
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, verify
from coca_platform.localinfra import free_port
from coca_platform.testing.tokens import TokenIssuer

__all__ = ["FakeUserService", "serve_aiohttp", "serve_asgi"]

JWKS_PATH = "/.well-known/jwks.json"
VERIFY_API_KEY_PATH = "/internal/v1/api-keys/verify"


@asynccontextmanager
async def serve_aiohttp(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port; yields its base URL, stops it on exit."""
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_asgi(
    app: Any, *, startup_timeout_s: float = 60, shutdown_timeout_s: float = 30, **uvicorn_options: Any
) -> AsyncIterator[str]:
    """Serve the ASGI ``app`` under uvicorn (lifespan on) on 127.0.0.1 on a free port, in this event loop;
    yields its base URL, stops it on exit. ``uvicorn_options`` go to ``uvicorn.Config`` (e.g. ``ws``,
    ``timeout_graceful_shutdown``). Pytest's signal handlers are left alone."""
    import uvicorn

    class InProcessServer(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    options: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "on"}
    server = InProcessServer(uvicorn.Config(app, **(options | uvicorn_options)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(startup_timeout_s):
                while not server.started:
                    if task.done():
                        task.result()  # the error it failed with, if any
                        raise RuntimeError("the ASGI app did not start (its lifespan failed)")
                    await asyncio.sleep(0.02)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, shutdown_timeout_s)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class FakeUserService:
    """The user service over HTTP. ``issuers`` (append one to rotate a key in) make up the JWKS;
    ``api_keys`` maps a key to the verify endpoint's answer for it. ``jwks_fetches`` and
    ``verify_calls`` (calls by a system caller) count what reached it; ``url`` is set while served."""

    def __init__(self, *issuers: TokenIssuer, internal_secret: str | bytes | None = None) -> None:
        self.issuers = list(issuers)
        self.api_keys: dict[str, dict[str, Any]] = {}
        self.jwks_fetches = 0
        self.verify_calls = 0
        self.url = ""
        self._secret = internal_secret.encode() if isinstance(internal_secret, str) else internal_secret

    def add_routes(self, app: web.Application) -> None:
        """The JWKS route, and the API-key verify route when an internal secret was given."""
        app.router.add_get(JWKS_PATH, self._jwks)
        if self._secret is not None:
            app.router.add_post(VERIFY_API_KEY_PATH, partial(self._verify, self._secret))

    def app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[Self]:
        """Serve :meth:`app` on a free port (``url`` set meanwhile)."""
        async with serve_aiohttp(self.app()) as url:
            self.url = url
            yield self

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [jwk for issuer in self.issuers for jwk in issuer.jwks()["keys"]]})

    async def _verify(self, secret: bytes, request: web.Request) -> web.Response:
        try:
            caller = verify(
                request.headers.get(IDENTITY_HEADER), request.headers.get(SIGNATURE_HEADER), secret
            )
        except Unauthenticated as exc:  # what the platform's error handler renders
            return _error(401, exc.code, exc.message)
        if caller.role != "system":
            return _error(403, "permission_denied", "system callers only")
        self.verify_calls += 1
        found = self.api_keys.get((await request.json())["key"])
        if found is None:
            return _error(401, "invalid_api_key", "unknown API key")
        return web.json_response(found)
