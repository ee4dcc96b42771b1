"""Wiring of the user service: the lifespan opens resources; the routers come from ``api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import cache, db, web
from fastapi import FastAPI

from coca_user import api
from coca_user._tokens import configuration_problem
from coca_user.resources import open_resources
from coca_user.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    problem = configuration_problem(settings)
    if problem:  # before anything binds a port
        raise SystemExit(problem)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            readiness = {"postgres": partial(db.ping, res.pool), "redis": partial(cache.ping, res.redis)}
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app
