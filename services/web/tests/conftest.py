"""Fixtures for the web service's own tests: the app in-process (its lifespan run), no infrastructure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from coca_platform.testing import asgi_client
from coca_web.app import create_app
from coca_web.settings import Settings

GATEWAY = "https://api.coca.test:8443"

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def gateway_url() -> str:
    """The gateway URL the test app is configured with."""
    return GATEWAY


@pytest.fixture
def make_client() -> ClientFactory:
    """``async with make_client(**settings) as client``: the web app with those settings."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        values: dict[str, Any] = {"environment": "test", "gateway_public_url": GATEWAY}
        return asgi_client(create_app(Settings(**(values | overrides))))  # type: ignore[no-any-return]

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as http:
        yield http
