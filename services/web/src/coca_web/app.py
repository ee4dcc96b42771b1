"""Wiring of the web service. Its domain endpoints arrive with their own issue; until then it runs,
reports health and readiness, and exposes metrics like every other service."""

from __future__ import annotations

from coca_platform import web
from fastapi import FastAPI

from coca_web.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return web.create_app(settings)
