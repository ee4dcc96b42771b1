from __future__ import annotations

from fastapi import FastAPI

from coca_platform import web
from coca_ws_gateway.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return web.create_app(settings)
