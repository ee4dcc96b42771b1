"""Fixtures for the billing service's tests: the app in-process over real PostgreSQL (and Kafka where a
test needs it), the usage handler over its own pool, and builders for tenants and usage records.

The shared app runs without its Kafka consumer; Kafka tests start their own on a topic of their own.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from coca_billing.app import create_app
from coca_billing.consumers import usage_handler
from coca_billing.metering import UsageMeter
from coca_billing.settings import Settings
from coca_platform.db import create_pool
from coca_platform.envelope import Envelope
from coca_platform.identity import Identity
from coca_platform.kafka import Handler, Record
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, migrate_for_tests, schema_connection, signed_headers

MODEL = "qwen2.5-1.5b-instruct"
_offsets = itertools.count()


def make_settings(infra: LocalInfra, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": infra.database_url,
        "kafka_bootstrap": infra.kafka_bootstrap,
        "db_pool_max": 4,
        "usage_consumer_enabled": False,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
async def migrated(infra: LocalInfra) -> LocalInfra:
    await migrate_for_tests(infra.database_url, schema="coca_billing", package="coca_billing")
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
    """A direct connection, to look at the rows the service wrote."""
    async with schema_connection(migrated.database_url, "coca_billing") as conn:
        yield conn


@pytest.fixture(scope="session")
async def handle(migrated: LocalInfra) -> AsyncIterator[Handler]:
    """The usage consumer's batch handler (what ``run_consumer`` calls), over a pool of its own."""
    async with create_pool(
        migrated.database_url, schema="coca_billing", application_name="billing-tests", max_size=4
    ) as pool:
        yield usage_handler(UsageMeter(pool))


def usage_envelope(
    tenant_id: str,
    run_id: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    model: str = MODEL,
    agent_id: str | None = None,
    user_id: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """A ``usage.recorded`` envelope as producers send it."""
    extra: dict[str, Any] = {"id": event_id} if event_id else {}
    if time is not None:
        extra["time"] = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Envelope(
        type="usage.recorded",
        source="tests",
        tenant_id=tenant_id,
        subject=run_id,
        data={
            "tenant_id": tenant_id,
            "user_id": user_id or str(uuid.uuid4()),
            "agent_id": agent_id or str(uuid.uuid4()),
            "run_id": run_id,
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        },
        **extra,
    )


def record_of(value: Envelope | bytes, topic: str = "usage.records") -> Record:
    """A consumed Kafka record carrying ``value``."""
    raw = value.to_json() if isinstance(value, Envelope) else value
    return Record(topic, 0, next(_offsets), None, raw, {}, 0)


@dataclass
class Tenant:
    """A tenant; ``headers()`` signs a member's identity in it, ``id`` is its UUID as text."""

    secret: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def headers(self, *, role: str = "member") -> dict[str, str]:
        return signed_headers(Identity(tenant_id=self.id, user_id=self.user_id, role=role), self.secret)


class Billing:
    """Calls the billing service as the gateway (public paths) and the agent (internal paths) would."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection) -> None:
        self.http, self.db = http, db
        self.secret = settings.internal_secret.get_secret_value()
        self.system = signed_headers(
            Identity(tenant_id="-", user_id="service:agent", role="system"), self.secret
        )

    def tenant(self) -> Tenant:
        return Tenant(self.secret)

    async def with_quota(self, tokens: int) -> Tenant:
        """A fresh tenant on a plan of its own with a monthly quota of ``tokens``."""
        tenant = self.tenant()
        plan_id = f"p-{uuid.uuid4().hex[:12]}"
        await self.db.execute(
            "INSERT INTO plans (id, name, monthly_token_quota) VALUES ($1, 'Test plan', $2)", plan_id, tokens
        )
        response = await self.http.put(
            f"/internal/v1/tenants/{tenant.id}/plan", json={"plan_id": plan_id}, headers=self.system
        )
        assert response.status_code == 200, response.text
        return tenant

    async def reserve(
        self, tenant: Tenant, tokens: int, run_id: str | None = None, http: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        body = {"tenant_id": tenant.id, "run_id": run_id or str(uuid.uuid4()), "estimated_tokens": tokens}
        return await (http or self.http).post("/internal/v1/quota:reserve", json=body, headers=self.system)

    async def release(self, run_id: str) -> httpx.Response:
        return await self.http.post(
            "/internal/v1/quota:release", json={"run_id": run_id}, headers=self.system
        )

    async def balance(self, tenant: Tenant) -> dict[str, Any]:
        response = await self.http.get("/v1/billing/balance", headers=tenant.headers())
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def usage(self, tenant: Tenant, **params: str) -> httpx.Response:
        return await self.http.get("/v1/usage", params=params, headers=tenant.headers())


@pytest.fixture(scope="session")
def billing(client: httpx.AsyncClient, settings: Settings, db: asyncpg.Connection) -> Billing:
    return Billing(client, settings, db)


@pytest.fixture(scope="session")
def settings_with(settings: Settings) -> Callable[..., Settings]:
    """The test settings with some fields changed."""
    return lambda **overrides: Settings(**(settings.model_dump() | overrides))


@pytest.fixture(scope="session")
def envelope() -> Callable[..., Envelope]:
    """``envelope(tenant_id, run_id, prompt_tokens, completion_tokens, **kw)``: see ``usage_envelope``."""
    return usage_envelope


@pytest.fixture(scope="session")
def to_record() -> Callable[..., Record]:
    return record_of


RecordUsage = Callable[..., Awaitable[Envelope]]


@pytest.fixture
def record_usage(handle: Handler) -> RecordUsage:
    """Hand one usage envelope to the consumer's handler; returns the envelope."""

    async def make(tenant: Tenant, run_id: str, prompt: int, completion: int, **kw: Any) -> Envelope:
        envelope = usage_envelope(tenant.id, run_id, prompt, completion, **kw)
        await handle([record_of(envelope)])
        return envelope

    return make
