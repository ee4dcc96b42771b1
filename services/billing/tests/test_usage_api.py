"""GET /v1/usage and GET /v1/billing/balance: grouping, ranges, validation and tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from coca_billing.models import Period
from coca_platform.identity import Identity
from coca_platform.testing import signed_headers

# Fixtures come from conftest.py: `billing` calls the in-process app (a Billing; `billing.tenant()` makes
# a tenant whose `headers()` sign a member's identity), `record_usage(tenant, run_id, prompt, completion,
# model=, agent_id=, time=)` hands a usage record to the consumer's handler.
Billing = Any
RecordUsage = Callable[..., Awaitable[Any]]

AGENT_A, AGENT_B = str(uuid.uuid4()), str(uuid.uuid4())


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 2, day, hour, tzinfo=UTC)


@pytest.fixture
async def february(billing: Billing, record_usage: RecordUsage) -> Any:
    """A tenant with usage on 1, 2 and 29 February 2024 (UTC), two models and two agents."""
    tenant = billing.tenant()
    await record_usage(tenant, "r1", 1000, 100, agent_id=AGENT_A, time=_at(1, 0))
    await record_usage(tenant, "r2", 2000, 200, agent_id=AGENT_A, time=_at(1, 23))
    await record_usage(tenant, "r3", 1000, 1000, agent_id=AGENT_B, model="other-model", time=_at(2))
    await record_usage(tenant, "r4", 10, 10, agent_id=AGENT_B, time=_at(29, 23))
    return tenant


async def test_usage_grouped_by_day_sums_each_utc_day(billing: Billing, february: Any) -> None:
    response = await billing.usage(february, **{"from": "2024-02-01", "to": "2024-02-29", "group_by": "day"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["items"] == [
        {"key": "2024-02-01", "prompt_tokens": 3000, "completion_tokens": 300, "cost_micros": 360},
        {"key": "2024-02-02", "prompt_tokens": 1000, "completion_tokens": 1000, "cost_micros": 2000},
        {"key": "2024-02-29", "prompt_tokens": 10, "completion_tokens": 10, "cost_micros": 3},
    ]
    assert body["totals"] == {"prompt_tokens": 4010, "completion_tokens": 1310, "cost_micros": 2363}
    assert (body["from"], body["to"], body["group_by"]) == (
        "2024-02-01T00:00:00Z",
        "2024-03-01T00:00:00Z",
        "day",
    )


async def test_usage_grouped_by_model_and_by_agent(billing: Billing, february: Any) -> None:
    window = {"from": "2024-02-01", "to": "2024-02-29"}

    by_model = (await billing.usage(february, **window, group_by="model")).json()["items"]
    by_agent = (await billing.usage(february, **window, group_by="agent")).json()["items"]

    assert [(i["key"], i["prompt_tokens"], i["completion_tokens"]) for i in by_model] == [
        ("other-model", 1000, 1000),
        ("qwen2.5-1.5b-instruct", 3010, 310),
    ]
    assert {i["key"]: i["cost_micros"] for i in by_agent} == {AGENT_A: 360, AGENT_B: 2003}


async def test_usage_ranges_are_half_open_timestamps_or_whole_days(billing: Billing, february: Any) -> None:
    exact = await billing.usage(
        february, **{"from": "2024-02-01T23:00:00Z", "to": "2024-02-02T12:00:00+00:00"}
    )
    one_day = await billing.usage(february, **{"from": "2024-02-29", "to": "2024-02-29"})

    assert [i["key"] for i in exact.json()["items"]] == ["2024-02-01"]
    assert exact.json()["totals"]["prompt_tokens"] == 2000  # 23:00 on the 1st in, noon on the 2nd out
    assert one_day.json()["totals"]["prompt_tokens"] == 10


async def test_usage_defaults_to_this_month_so_far(billing: Billing, record_usage: RecordUsage) -> None:
    tenant = billing.tenant()
    await record_usage(tenant, "now", 7, 3)
    await record_usage(tenant, "last-year", 1000, 1000, time=datetime(2024, 1, 15, tzinfo=UTC))

    body = (await billing.usage(tenant)).json()

    assert body["totals"]["prompt_tokens"] == 7
    assert body["from"] == Period.of(datetime.now(UTC)).start.isoformat().replace("+00:00", "Z")


async def test_a_tenant_sees_only_its_own_usage(
    billing: Billing, record_usage: RecordUsage, february: Any
) -> None:
    other = billing.tenant()
    await record_usage(other, "theirs", 5, 5, time=_at(1))

    mine = (await billing.usage(february, **{"from": "2024-02-01", "to": "2024-02-29"})).json()
    theirs = (await billing.usage(other, **{"from": "2024-02-01", "to": "2024-02-29"})).json()
    nobody = (await billing.usage(billing.tenant(), **{"from": "2024-02-01", "to": "2024-02-29"})).json()

    assert mine["totals"]["prompt_tokens"] == 4010
    assert theirs["totals"] == {"prompt_tokens": 5, "completion_tokens": 5, "cost_micros": 2}
    assert nobody["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"from": "2024-02-30"},
        {"to": "2024-13-01"},
        {"from": "2024-03-01", "to": "2024-02-01"},
        {"from": "2024-02-01T10:00:00Z", "to": "2024-02-01T10:00:00Z"},
        {"from": "2020-01-01", "to": "2024-01-01"},
        {"from": "9999-12-31", "to": "9999-12-31"},
        {"group_by": "week"},
        {"from": "2024-02-01" + "0" * 100},
    ],
)
async def test_bad_usage_queries_are_422(billing: Billing, params: dict[str, str]) -> None:
    response = await billing.usage(billing.tenant(), **params)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {"invalid_argument", "invalid_range"}


async def test_usage_and_balance_need_a_tenant_identity(billing: Billing) -> None:
    system = signed_headers(Identity(tenant_id="-", user_id="service:x", role="system"), billing.secret)

    anonymous = await billing.http.get("/v1/usage")
    as_service = await billing.http.get("/v1/billing/balance", headers=system)

    assert anonymous.status_code == 401
    assert as_service.status_code == 403


async def test_balance_of_a_new_tenant_is_the_default_plan_untouched(billing: Billing) -> None:
    period = Period.of(datetime.now(UTC))

    balance = await billing.balance(billing.tenant())

    assert balance == {
        "plan": "free",
        "plan_name": "Free",
        "period_start": period.start.isoformat().replace("+00:00", "Z"),
        "period_end": period.end.isoformat().replace("+00:00", "Z"),
        "quota_tokens": 1_000_000,
        "used_tokens": 0,
        "reserved_tokens": 0,
        "remaining_tokens": 1_000_000,
        "cost_micros": 0,
    }


async def test_balance_counts_this_months_usage_and_cost_only(
    billing: Billing, record_usage: RecordUsage
) -> None:
    tenant = billing.tenant()
    await record_usage(tenant, "a", 1000, 500)  # 100 + 100 micros
    await record_usage(tenant, "old", 9000, 9000, time=datetime(2024, 1, 1, tzinfo=UTC))
    assert (await billing.reserve(tenant, 2500)).status_code == 201

    balance = await billing.balance(tenant)

    assert (balance["used_tokens"], balance["reserved_tokens"], balance["cost_micros"]) == (1500, 2500, 200)
    assert balance["remaining_tokens"] == 1_000_000 - 1500 - 2500
