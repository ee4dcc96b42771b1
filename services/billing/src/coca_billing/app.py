"""Wiring of the billing service: the lifespan opens resources (and the usage consumer); the routers
come from ``api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import db, web
from fastapi import FastAPI

from coca_billing import api
from coca_billing.resources import open_resources
from coca_billing.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_resources(settings) as res:
            readiness = {"postgres": partial(db.ping, res.pool), "usage_consumer": res.check_consumer}
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app
