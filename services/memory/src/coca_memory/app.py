"""Wiring of the memory service: resources, the gRPC server, the indexing worker and the HTTP routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from coca_platform import amqp, db, rpc, web
from fastapi import FastAPI

from coca_memory import api, grpc_servicer
from coca_memory.resources import open_resources
from coca_memory.settings import Settings
from coca_memory.workers import run_workers


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with (
            open_resources(settings) as res,
            rpc.serve_grpc(
                host=settings.grpc_host,
                port=settings.grpc_port,
                register=partial(grpc_servicer.register, res),
            ),
            run_workers(res) as workers_running,
        ):
            readiness = {
                "postgres": partial(db.ping, res.pool),
                "rabbitmq": partial(amqp.ping, res.amqp),
                "s3": res.store.ping,
                "milvus": res.vectors.ping,
                "indexer": workers_running,
            }
            yield {"resources": res, "readiness": readiness}

    app = web.create_app(settings, lifespan)
    app.include_router(api.router)
    return app
