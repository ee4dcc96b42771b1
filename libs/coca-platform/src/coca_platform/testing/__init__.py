"""Pytest plugin (auto-loaded through the ``pytest11`` entry point) and helpers for tests against real
infrastructure.

Fixtures: ``infra`` (session; PostgreSQL database fresh for the session, Redis, RabbitMQ, a Kafka-protocol
broker and an S3 server — started by :mod:`coca_platform.localinfra` unless ``COCA_TEST_*`` variables
point at running ones), ``unique`` (unique names, so tests share no state and need no cleanup).

Helpers: :func:`free_port`, :func:`migrate_for_tests`, :func:`schema_connection`, :func:`asgi_client`,
:func:`serve_asgi`, :func:`signed_headers`, :func:`create_topic`.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, sign
from coca_platform.localinfra import InfraError, LocalInfra, free_port

__all__ = [
    "FakeUserService",
    "TokenIssuer",
    "asgi_client",
    "create_topic",
    "free_port",
    "migrate_for_tests",
    "schema_connection",
    "serve_aiohttp",
    "serve_asgi",
    "signed_headers",
]

_ENV = {
    "admin_url": "COCA_TEST_PG_ADMIN_URL",
    "redis_url": "COCA_TEST_REDIS_URL",
    "amqp_url": "COCA_TEST_AMQP_URL",
    "kafka_bootstrap": "COCA_TEST_KAFKA_BOOTSTRAP",
    "s3_endpoint": "COCA_TEST_S3_ENDPOINT",
}


@pytest.fixture(scope="session")
def infra() -> Iterator[LocalInfra]:
    """Real infrastructure for this test session; a database created for it and dropped after."""
    overrides = {key: os.environ[var] for key, var in _ENV.items() if os.environ.get(var)}
    data_dir = Path(tempfile.mkdtemp(prefix="coca-test-infra-"))
    try:
        with LocalInfra.start(
            data_dir,
            database=f"coca_test_{uuid.uuid4().hex[:12]}",
            fresh_database=True,
            drop_database_on_exit=True,
            private_vhost="amqp_url" not in overrides,
            **overrides,
        ) as started:
            yield started
    except InfraError as exc:  # never a silent skip: the suite needs real infrastructure
        pytest.fail(f"test infrastructure unavailable: {exc}", pytrace=False)


@pytest.fixture
def unique() -> Callable[[str], str]:
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    return make


async def migrate_for_tests(database_url: str, *, schema: str, package: str) -> list[str]:
    from coca_platform.db import migrate_dsn

    return await migrate_dsn(database_url, schema=schema, package=package)


@asynccontextmanager
async def schema_connection(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection with ``schema`` on its search path, to look at (and set up) a service's rows."""
    import asyncpg

    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def asgi_client(app: Any, base_url: str = "http://test") -> AsyncIterator[Any]:
    """Run ``app``'s lifespan and yield an httpx client talking to it in-process."""
    import httpx
    from asgi_lifespan import LifespanManager

    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client


def signed_headers(identity: Identity, secret: str) -> dict[str, str]:
    """The internal identity headers the gateway would set for ``identity``."""
    encoded, signature = sign(identity, secret.encode())
    return {IDENTITY_HEADER: encoded.decode(), SIGNATURE_HEADER: signature.decode()}


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    from coca_platform import kafka

    await kafka.create_topics(bootstrap, {name: (partitions, None)})


# Token and peer stand-ins (coca_platform.testing.tokens, .peers), imported on first use so that aiohttp
# and the JWT stack stay out of the start of every test session that loads this plugin.
if TYPE_CHECKING:
    import asyncpg

    from coca_platform.testing.peers import FakeUserService, serve_aiohttp, serve_asgi
    from coca_platform.testing.tokens import TokenIssuer

_LAZY_EXPORTS = {
    "FakeUserService": "peers",
    "serve_aiohttp": "peers",
    "serve_asgi": "peers",
    "TokenIssuer": "tokens",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_LAZY_EXPORTS[name]}"), name)
