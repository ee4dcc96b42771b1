"""ws_gateway: ``/ws`` pushes agent events to subscribed clients, in order and resumable.

Wiring only: the lifespan opens Redis, the authenticator, the event log and the one Kafka tail of
this process (see ``resources``); ``/ws`` runs a ``connection.Session`` per client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from coca_platform import cache, web
from fastapi import FastAPI
from starlette.websockets import WebSocket

from coca_ws_gateway.connection import Session, authenticate
from coca_ws_gateway.metrics import CONNECTIONS
from coca_ws_gateway.resources import Resources, open_resources
from coca_ws_gateway.settings import Settings


async def websocket_endpoint(ws: WebSocket) -> None:
    res: Resources = ws.state.resources
    await ws.accept()
    CONNECTIONS.inc()
    try:
        identity = await authenticate(ws, res)
        if identity is not None:
            await Session(ws, res, identity).run()
    finally:
        CONNECTIONS.dec()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            yield {
                "resources": res,
                "readiness": {"redis": lambda: cache.ping(res.redis), "kafka": res.check_kafka},
            }

    app = web.create_app(settings, lifespan=lifespan)
    app.router.add_websocket_route("/ws", websocket_endpoint)
    return app
