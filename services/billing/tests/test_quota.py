"""Quota reservations: held before a run, refused over the quota (402), released, expired, settled by
usage, and atomic across two app instances."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from coca_billing.app import create_app
from coca_billing.settings import Settings
from coca_platform.identity import Identity
from coca_platform.testing import asgi_client, signed_headers

# Fixtures come from conftest.py: `billing` calls the in-process app (a Billing; `billing.with_quota(n)`
# makes a tenant on a plan of its own), `record_usage(tenant, run_id, prompt, completion)` hands a usage
# record to the consumer's handler, `settings_with(**overrides)` gives changed settings.
Billing = Any
RecordUsage = Callable[..., Awaitable[Any]]


async def test_reserve_holds_tokens_and_reports_what_remains(billing: Billing) -> None:
    tenant = await billing.with_quota(1000)

    response = await billing.reserve(tenant, 300, run_id="run-a-" + tenant.id)
    balance = await billing.balance(tenant)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["tokens"] == 300
    assert body["remaining"] == 700
    assert body["status"] == "reserved"
    assert body["tenant_id"] == tenant.id
    assert (balance["quota_tokens"], balance["reserved_tokens"], balance["remaining_tokens"]) == (
        1000,
        300,
        700,
    )
    assert balance["used_tokens"] == 0


async def test_a_reservation_over_the_quota_is_refused_with_402_and_says_why(billing: Billing) -> None:
    tenant = await billing.with_quota(1000)
    assert (await billing.reserve(tenant, 800)).status_code == 201

    refused = await billing.reserve(tenant, 300)

    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "allows 1000 tokens a month" in error["message"]
    assert "0 used and 800 reserved" in error["message"]
    assert "300 more requested" in error["message"]
    assert (await billing.balance(tenant))["reserved_tokens"] == 800


async def test_repeating_a_reservation_for_the_same_run_returns_it_without_holding_more(
    billing: Billing,
) -> None:
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())

    first = await billing.reserve(tenant, 600, run_id=run_id)
    again = await billing.reserve(tenant, 600, run_id=run_id)

    assert first.status_code == again.status_code == 201
    assert again.json()["reservation_id"] == first.json()["reservation_id"]
    assert (await billing.balance(tenant))["reserved_tokens"] == 600


async def test_a_run_id_of_another_tenant_is_a_conflict(billing: Billing) -> None:
    run_id = str(uuid.uuid4())
    assert (await billing.reserve(await billing.with_quota(1000), 10, run_id=run_id)).status_code == 201

    response = await billing.reserve(await billing.with_quota(1000), 10, run_id=run_id)

    assert response.status_code == 409
    assert "another tenant" in response.json()["error"]["message"]


async def test_release_gives_the_tokens_back_without_charging(billing: Billing) -> None:
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())
    assert (await billing.reserve(tenant, 900, run_id=run_id)).status_code == 201

    released = await billing.release(run_id)
    again = await billing.release(run_id)
    next_run = await billing.reserve(tenant, 900)
    balance = await billing.balance(tenant)

    assert released.status_code == 200
    assert released.json()["status"] == "released"
    assert again.status_code == 200
    assert again.json()["status"] == "released"
    assert next_run.status_code == 201
    assert (balance["used_tokens"], balance["reserved_tokens"], balance["cost_micros"]) == (0, 900, 0)


async def test_releasing_a_run_without_a_reservation_is_not_found(billing: Billing) -> None:
    response = await billing.release(str(uuid.uuid4()))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_released_run_cannot_reserve_again(billing: Billing) -> None:
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())
    await billing.reserve(tenant, 100, run_id=run_id)
    await billing.release(run_id)

    response = await billing.reserve(tenant, 100, run_id=run_id)

    assert response.status_code == 409
    assert "released" in response.json()["error"]["message"]


async def test_usage_settles_the_runs_reservation_with_the_actual_tokens(
    billing: Billing, record_usage: RecordUsage, db: asyncpg.Connection
) -> None:
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())
    assert (await billing.reserve(tenant, 900, run_id=run_id)).status_code == 201

    await record_usage(tenant, run_id, 400, 200)
    balance = await billing.balance(tenant)
    status = await db.fetchrow("SELECT status, settled_tokens FROM reservations WHERE run_id = $1", run_id)

    assert (balance["used_tokens"], balance["reserved_tokens"], balance["remaining_tokens"]) == (600, 0, 400)
    assert (status["status"], status["settled_tokens"]) == ("settled", 600)
    assert (await billing.reserve(tenant, 400)).status_code == 201
    refused = await billing.reserve(tenant, 1)
    assert refused.status_code == 402
    assert "600 used and 400 reserved" in refused.json()["error"]["message"]


async def test_an_expired_reservation_stops_counting_and_the_sweep_marks_it(
    settings_with: Callable[..., Settings], billing: Billing, db: asyncpg.Connection
) -> None:
    short = settings_with(reservation_ttl_s=1, sweep_interval_s=0.2)
    tenant = await billing.with_quota(1000)
    run_id = str(uuid.uuid4())
    async with asgi_client(create_app(short)) as http:
        assert (await billing.reserve(tenant, 900, run_id=run_id, http=http)).status_code == 201
        assert (await billing.reserve(tenant, 900, http=http)).status_code == 402

        await asyncio.sleep(1.6)
        after = await billing.reserve(tenant, 900, http=http)
        status = await db.fetchval("SELECT status FROM reservations WHERE run_id = $1", run_id)

    assert after.status_code == 201
    assert status == "expired"


async def test_the_quota_api_is_for_system_callers_only(billing: Billing) -> None:
    tenant = billing.tenant()
    body = {"tenant_id": tenant.id, "run_id": "r", "estimated_tokens": 1}

    as_member = await billing.http.post("/internal/v1/quota:reserve", json=body, headers=tenant.headers())
    as_owner = await billing.http.post(
        "/internal/v1/quota:release", json={"run_id": "r"}, headers=tenant.headers(role="owner")
    )
    anonymous = await billing.http.post("/internal/v1/quota:reserve", json=body)
    forged = await billing.http.post(
        "/internal/v1/quota:reserve",
        json=body,
        headers=signed_headers(Identity(tenant_id="-", user_id="x", role="system"), "not-the-secret"),
    )

    assert (as_member.status_code, as_owner.status_code, anonymous.status_code) == (403, 403, 401)
    assert forged.status_code == 401


async def test_a_reservation_request_is_validated(billing: Billing, settings: Settings) -> None:
    tenant = billing.tenant()
    bad_bodies: list[dict[str, Any]] = [
        {"tenant_id": tenant.id, "run_id": "r", "estimated_tokens": 0},
        {"tenant_id": "not-a-uuid", "run_id": "r", "estimated_tokens": 10},
        {"tenant_id": tenant.id, "run_id": "", "estimated_tokens": 10},
        {"tenant_id": tenant.id, "run_id": "r" * 201, "estimated_tokens": 10},
        {"tenant_id": tenant.id, "estimated_tokens": 10},
    ]
    responses = [
        await billing.http.post("/internal/v1/quota:reserve", json=b, headers=billing.system)
        for b in bad_bodies
    ]
    too_large = await billing.reserve(tenant, settings.max_reservation_tokens + 1)

    assert [r.status_code for r in responses] == [422] * len(bad_bodies)
    assert {r.json()["error"]["code"] for r in responses} == {"invalid_argument"}
    assert too_large.status_code == 422
    assert too_large.json()["error"]["code"] == "reservation_too_large"


async def test_assigning_an_unknown_plan_is_not_found(billing: Billing) -> None:
    response = await billing.http.put(
        f"/internal/v1/tenants/{uuid.uuid4()}/plan", json={"plan_id": "no-such-plan"}, headers=billing.system
    )

    assert response.status_code == 404


async def test_concurrent_reservations_on_two_instances_never_exceed_the_quota(
    settings: Settings, billing: Billing
) -> None:
    """40 reservations of 100 tokens at once, half on each of two app instances (each with its own
    connection pool, as two replicas), against a quota of 1000: exactly 10 are granted."""
    tenant = await billing.with_quota(1000)
    async with asgi_client(create_app(settings)) as other:
        instances: list[httpx.AsyncClient] = [billing.http, other]
        responses = await asyncio.gather(
            *(billing.reserve(tenant, 100, http=instances[i % 2]) for i in range(40))
        )
    balance = await billing.balance(tenant)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 402: 30}
    granted_per_instance = Counter(i % 2 for i, r in enumerate(responses) if r.status_code == 201)
    assert sum(granted_per_instance.values()) == 10
    assert balance["reserved_tokens"] == 1000
    assert balance["remaining_tokens"] == 0
    assert sorted(r.json()["remaining"] for r in responses if r.status_code == 201) == list(
        range(0, 1000, 100)
    )


async def test_reservations_are_counted_in_the_metrics(billing: Billing) -> None:
    tenant = await billing.with_quota(10)

    def refused(text: str) -> float:
        prefix = 'coca_billing_reservations_total{result="refused"} '
        return sum(float(x.removeprefix(prefix)) for x in text.splitlines() if x.startswith(prefix))

    await billing.reserve(tenant, 10)
    before = refused((await billing.http.get("/metrics")).text)
    assert (await billing.reserve(tenant, 1)).status_code == 402
    after = refused((await billing.http.get("/metrics")).text)

    assert after == before + 1
