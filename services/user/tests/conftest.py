"""Fixtures for the user service's tests: the app in-process over real PostgreSQL and Redis.

Test settings use bcrypt cost 4 and a lockout after 3 failures, for speed; one test checks the
default cost with default settings.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, migrate_for_tests, schema_connection, signed_headers
from coca_user.app import create_app
from coca_user.settings import Settings

MAX_FAILURES = 3


def make_settings(infra: LocalInfra, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "redis_url": infra.redis_url,
        "bcrypt_cost": 4,
        "login_max_failures": MAX_FAILURES,
        "db_pool_max": 4,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
async def migrated(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_user", package="coca_user")
    return infra


@pytest.fixture(scope="session")
def settings(migrated: LocalInfra) -> Settings:
    return make_settings(migrated)


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="session")
async def db(migrated: LocalInfra) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to look at (and age) rows the API wrote."""
    async with schema_connection(migrated.database_url, "coca_user") as conn:
        yield conn


@pytest.fixture(scope="session")
async def redis(migrated: LocalInfra) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(migrated.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def as_caller(settings: Settings) -> Callable[[Identity], dict[str, str]]:
    """The signed identity headers the gateway would send for a caller."""
    secret = settings.internal_secret.get_secret_value()
    return lambda identity: signed_headers(identity, secret)


@pytest.fixture
def system_headers(as_caller: Callable[[Identity], dict[str, str]]) -> dict[str, str]:
    return as_caller(Identity(tenant_id="-", user_id="service:gateway", role="system"))


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    user: dict[str, Any]

    @property
    def user_id(self) -> str:
        return str(self.user["id"])

    @property
    def tenant_id(self) -> str:
        return str(self.user["tenant_id"])

    def identity(self, *, role: str | None = None, method: str = "jwt") -> Identity:
        return Identity(
            tenant_id=self.tenant_id, user_id=self.user_id, role=role or self.user["role"], method=method
        )


@pytest.fixture
def register(client: httpx.AsyncClient, unique: Callable[[str], str]) -> Callable[..., Awaitable[Account]]:
    """Register a fresh account (a new tenant, the user its owner)."""

    async def make(password: str = "correct horse battery", **extra: Any) -> Account:  # noqa: S107
        email = f"{unique('user')}@example.com"
        body = {"email": email, "password": password, "display_name": "Ada Lovelace", **extra}
        response = await client.post("/v1/auth/register", json=body)
        assert response.status_code == 201, response.text
        return Account(email=email, password=password, user=response.json())

    return make


@pytest.fixture
def add_member(db: asyncpg.Connection) -> Callable[[Account], Awaitable[Account]]:
    """A member in an existing account's tenant (there is no invitation API yet: rows go in directly)."""

    async def make(owner: Account) -> Account:
        email = f"member-{uuid.uuid4().hex[:12]}@example.com"
        row = await db.fetchrow(
            "INSERT INTO users (tenant_id, email, display_name, password_hash, role)"
            " VALUES ($1, $2, 'Member', 'x', 'member') RETURNING id, tenant_id, role",
            uuid.UUID(owner.tenant_id),
            email,
        )
        user = {"id": str(row["id"]), "tenant_id": str(row["tenant_id"]), "role": row["role"]}
        return Account(email=email, password="", user=user)

    return make
