"""The agent's BillingClient against the real billing service (under uvicorn on a free port, over real
PostgreSQL and Kafka): reserve, quota refusal, release, and a usage envelope metered exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import httpx
import pytest
from coca_agent.billing_client import USAGE_TOPIC, BillingClient, usage_event_id
from coca_billing.app import create_app as create_billing_app
from coca_billing.settings import Settings as BillingSettings
from coca_platform import kafka
from coca_platform.errors import PaymentRequired, Unauthenticated, Unavailable
from coca_platform.identity import Identity
from coca_platform.localinfra import LocalInfra, free_port
from coca_platform.testing import (
    create_topic,
    migrate_for_tests,
    schema_connection,
    serve_asgi,
    signed_headers,
)
from pydantic import SecretStr

SECRET = "billing-client-tests-secret"
MODEL = "qwen2.5-1.5b-instruct"


@dataclass(frozen=True)
class Billing:
    addr: str  # host:port, as BILLING_SERVICE_ADDR may be given
    db: asyncpg.Connection

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    async def tenant_with_quota(self, tokens: int) -> str:
        tenant_id, plan_id = str(uuid.uuid4()), f"p-{uuid.uuid4().hex[:12]}"
        await self.db.execute(
            "INSERT INTO plans (id, name, monthly_token_quota) VALUES ($1, 'Test', $2)", plan_id, tokens
        )
        system = signed_headers(Identity(tenant_id="-", user_id="tests", role="system"), SECRET)
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.put(
                f"/internal/v1/tenants/{tenant_id}/plan", json={"plan_id": plan_id}, headers=system
            )
        assert response.status_code == 200, response.text
        return tenant_id

    async def get(self, tenant_id: str, path: str) -> dict[str, object]:
        member = signed_headers(Identity(tenant_id=tenant_id, user_id=str(uuid.uuid4())), SECRET)
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.get(path, headers=member)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
async def billing(infra: LocalInfra) -> AsyncIterator[Billing]:
    """The billing service, its usage consumer reading ``usage.records`` in a group of its own."""
    await migrate_for_tests(infra.database_url, schema="coca_billing", package="coca_billing")
    await create_topic(infra.kafka_bootstrap, USAGE_TOPIC, partitions=4)
    settings = BillingSettings(
        environment="test",
        internal_secret=SecretStr(SECRET),
        database_url=infra.database_url,
        kafka_bootstrap=infra.kafka_bootstrap,
        usage_consumer_group=f"billing-client-tests-{uuid.uuid4().hex[:8]}",
        db_pool_max=4,
    )
    async with (
        serve_asgi(create_billing_app(settings)) as url,
        schema_connection(infra.database_url, "coca_billing") as db,
    ):
        yield Billing(url.removeprefix("http://"), db)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def client(billing: Billing, session: aiohttp.ClientSession) -> BillingClient:
    return BillingClient(session, billing.addr, SECRET)


async def test_reserve_holds_tokens_and_says_what_remains(billing: Billing, client: BillingClient) -> None:
    tenant_id, run_id = await billing.tenant_with_quota(1000), uuid.uuid4()

    reservation = await client.reserve(tenant_id, run_id, 400)
    again = await client.reserve(tenant_id, run_id, 400)

    assert (reservation.run_id, reservation.tokens, reservation.remaining) == (str(run_id), 400, 600)
    assert again.reservation_id == reservation.reservation_id
    assert reservation.expires_at.tzinfo is not None


async def test_over_the_quota_reserve_raises_402_quota_exceeded(
    billing: Billing, client: BillingClient
) -> None:
    tenant_id = await billing.tenant_with_quota(1000)
    await client.reserve(tenant_id, uuid.uuid4(), 900)

    with pytest.raises(PaymentRequired) as refused:
        await client.reserve(tenant_id, uuid.uuid4(), 200)

    assert refused.value.http_status == 402
    assert refused.value.code == "quota_exceeded"
    assert "900 reserved" in refused.value.message


async def test_release_gives_tokens_back_and_is_none_without_a_reservation(
    billing: Billing, client: BillingClient
) -> None:
    tenant_id, run_id = await billing.tenant_with_quota(1000), uuid.uuid4()
    await client.reserve(tenant_id, run_id, 1000)

    assert await client.release(run_id) == "released"
    assert await client.release(run_id) == "released"
    assert await client.release(uuid.uuid4()) is None
    assert (await client.reserve(tenant_id, uuid.uuid4(), 1000)).remaining == 0


async def test_a_published_usage_envelope_settles_the_run_once_even_if_published_twice(
    billing: Billing, client: BillingClient, infra: LocalInfra
) -> None:
    tenant_id, run_id, agent_id = await billing.tenant_with_quota(10_000), uuid.uuid4(), uuid.uuid4()
    await client.reserve(tenant_id, run_id, 5000)
    envelope = BillingClient.usage_envelope(tenant_id, uuid.uuid4(), agent_id, run_id, MODEL, 700, 300)
    retried = BillingClient.usage_envelope(tenant_id, uuid.uuid4(), agent_id, run_id, MODEL, 700, 300)

    async with kafka.open_producer(infra.kafka_bootstrap, client_id="billing-client-tests") as producer:
        for event in (envelope, retried):  # a publish retried after a crash carries the same id
            await producer.produce(USAGE_TOPIC, event.to_json(), key=tenant_id)
    async with asyncio.timeout(60):
        while (balance := await billing.get(tenant_id, "/v1/billing/balance"))["used_tokens"] == 0:
            await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # room for the second copy to be (not) counted
    balance = await billing.get(tenant_id, "/v1/billing/balance")
    usage = await billing.get(tenant_id, "/v1/usage?group_by=agent")

    assert (balance["used_tokens"], balance["reserved_tokens"]) == (1000, 0)
    assert usage["items"] == [
        {"key": str(agent_id), "prompt_tokens": 700, "completion_tokens": 300, "cost_micros": 130}
    ]


def test_the_usage_envelope_is_a_usage_record_with_an_id_derived_from_the_run() -> None:
    tenant_id, run_id = uuid.uuid4(), uuid.uuid4()

    envelope = BillingClient.usage_envelope(tenant_id, "u1", None, run_id, MODEL, 12, 34)

    assert envelope.id == usage_event_id(run_id) == usage_event_id(str(run_id))
    assert envelope.id != usage_event_id(uuid.uuid4())
    assert (envelope.type, envelope.source, envelope.subject) == ("usage.recorded", "agent", str(run_id))
    assert envelope.tenant_id == str(tenant_id)
    assert envelope.data == {
        "tenant_id": str(tenant_id),
        "user_id": "u1",
        "agent_id": None,
        "run_id": str(run_id),
        "model": MODEL,
        "prompt_tokens": 12,
        "completion_tokens": 34,
    }


async def test_a_wrong_secret_is_refused(billing: Billing, session: aiohttp.ClientSession) -> None:
    with pytest.raises(Unauthenticated):
        await BillingClient(session, billing.addr, "not-the-secret").reserve(uuid.uuid4(), uuid.uuid4(), 1)


async def test_billing_unreachable_is_unavailable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(Unavailable):
        await BillingClient(session, f"127.0.0.1:{free_port()}", SECRET).reserve(
            uuid.uuid4(), uuid.uuid4(), 1
        )
