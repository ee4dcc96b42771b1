"""Startup: migrations, readiness, and the plan settings applied to the database."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import httpx
import pytest
from coca_billing.app import create_app
from coca_billing.settings import Settings
from coca_platform.kafka import PROCESSED_EVENTS_DDL
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, migrate_for_tests

# Fixtures come from conftest.py: `client` (the in-process app), `billing` (a Billing over it),
# `settings_with(**overrides)` (changed test settings).
Billing = Any


async def test_migrations_are_applied_once(migrated: LocalInfra) -> None:
    again = await migrate_for_tests(migrated.database_url, schema="coca_billing", package="coca_billing")

    assert again == []


def test_the_dedupe_table_is_the_platforms() -> None:
    migration = (resources.files("coca_billing") / "migrations" / "0001_create_billing.sql").read_text()

    assert PROCESSED_EVENTS_DDL.strip() in migration


async def test_ready_when_postgres_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "usage_consumer": "ok"}


async def test_the_free_plans_quota_comes_from_the_settings(
    settings_with: Callable[..., Settings], billing: Billing
) -> None:
    try:
        async with asgi_client(create_app(settings_with(free_plan_monthly_tokens=1234))) as http:
            response = await http.get("/v1/billing/balance", headers=billing.tenant().headers())
    finally:  # the other tests expect the default
        async with asgi_client(create_app(settings_with())):
            pass

    assert response.json()["quota_tokens"] == 1234
    assert (await billing.balance(billing.tenant()))["quota_tokens"] == 1_000_000


async def test_an_unknown_default_plan_stops_startup(settings_with: Callable[..., Settings]) -> None:
    with pytest.raises(RuntimeError, match="no such plan"):
        async with asgi_client(create_app(settings_with(default_plan_id="no-such-plan"))):
            pass
