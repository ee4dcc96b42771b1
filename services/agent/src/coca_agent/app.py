"""Wiring of the agent service: the lifespan opens resources; the routers come from ``api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import cache, db, web
from fastapi import FastAPI

from coca_agent import api
from coca_agent.resources import open_resources
from coca_agent.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            readiness = {
                "postgres": partial(db.ping, res.pool),
                "redis": partial(cache.ping, res.redis),
                "kafka": partial(res.producer.ping, settings.readiness_timeout_s),
                "llm": res.llm.ping,
            }
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app
