"""Wiring of the plugin service: the lifespan opens resources and the fanout consumer; the routers
come from ``api`` (public) and ``internal_api`` (for the agent service)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import amqp, db, web
from fastapi import FastAPI

from coca_plugin import api, internal_api
from coca_plugin.consumers import check_running, run_consumers
from coca_plugin.events import new_instance_id
from coca_plugin.resources import open_resources
from coca_plugin.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with (
            open_resources(settings, instance=new_instance_id()) as res,
            run_consumers(res) as consumer,
        ):
            readiness = {
                "postgres": partial(db.ping, res.pool),
                "rabbitmq": partial(amqp.ping, res.amqp),
                "plugin-events": partial(check_running, consumer),
            }
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    app.include_router(internal_api.router)
    return app
