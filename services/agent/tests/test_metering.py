"""Usage metering of runs: every ended run's usage reaches Kafka ``usage.records`` exactly as billing
expects it, and a record Kafka never acknowledged is republished by the sweeper under the same id."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from coca_agent.billing_client import usage_event_id
from coca_agent.metering import Metering, sweep_once
from coca_agent.settings import Settings
from coca_platform.db import create_pool
from coca_platform.kafka import open_producer

Api = Any
Tenant = Any


async def _completed_run(live: Api, tenant: Tenant) -> tuple[str, dict[str, Any]]:
    conversation_id = await live.create_conversation(tenant)
    events = await live.stream(tenant, conversation_id, "count my tokens please")
    completed = events[-1].envelope
    assert completed["type"] == "run.completed"
    return completed["data"]["run_id"], completed["data"]["usage"]


async def test_a_completed_run_publishes_its_usage_record_once(
    live: Api, tenant: Tenant, usage_records: Any, db: asyncpg.Connection
) -> None:
    run_id, usage = await _completed_run(live, tenant)
    records = await usage_records.records(tenant.id, lambda found: len(found) >= 1)
    envelope = orjson.loads(records[0][0])
    assert envelope["id"] == usage_event_id(run_id)
    assert envelope["type"] == "usage.recorded"
    assert envelope["tenant_id"] == tenant.id
    assert envelope["data"]["run_id"] == run_id
    assert envelope["data"]["prompt_tokens"] == usage["prompt_tokens"]
    assert envelope["data"]["completion_tokens"] == usage["completion_tokens"]
    published = await db.fetchval("SELECT usage_published_at FROM runs WHERE id = $1", uuid.UUID(run_id))
    assert published is not None


async def test_an_unacknowledged_usage_record_is_republished_with_the_same_id(
    live: Api, tenant: Tenant, usage_records: Any, db: asyncpg.Connection, settings: Settings
) -> None:
    run_id, _ = await _completed_run(live, tenant)
    await usage_records.records(tenant.id, lambda found: len(found) >= 1)
    # As if the process died before Kafka acknowledged the record.
    await db.execute(
        "UPDATE runs SET usage_published_at = NULL, finished_at = now() - interval '5 minutes' WHERE id = $1",
        uuid.UUID(run_id),
    )
    async with (
        create_pool(settings.database_url, schema="coca_agent", application_name="t", max_size=2) as pool,
        open_producer(settings.kafka_bootstrap, client_id="agent-tests") as producer,
    ):
        swept = await sweep_once(pool, Metering(None, producer, 0), settings.llm_model, grace_s=60)
    assert swept >= 1
    records = await usage_records.records(tenant.id, lambda found: len(found) >= 2)
    assert {orjson.loads(value)["id"] for value, _ in records} == {usage_event_id(run_id)}
    assert (
        await db.fetchval("SELECT usage_published_at FROM runs WHERE id = $1", uuid.UUID(run_id)) is not None
    )


async def test_failed_run_without_tokens_publishes_nothing(
    live: Api, tenant: Tenant, db: asyncpg.Connection
) -> None:
    conversation_id = await live.create_conversation(tenant)
    events = await live.stream(tenant, conversation_id, "[[error:503]] hi")
    assert events[-1].event == "run.failed"
    run_id = events[-1].envelope["data"]["run_id"]
    row = await db.fetchrow(
        "SELECT prompt_tokens, completion_tokens, usage_published_at FROM runs WHERE id = $1",
        uuid.UUID(run_id),
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_published_at"]) == (0, 0, None)


async def test_runs_and_the_database_pool_are_exported_as_metrics(live: Api, tenant: Tenant) -> None:
    await _completed_run(live, tenant)
    conversation_id = await live.create_conversation(tenant)
    await live.stream(tenant, conversation_id, "[[error:503]] hi")
    metrics = (await live.http.get("/metrics")).text
    assert 'coca_agent_runs_total{outcome="completed"}' in metrics
    assert 'coca_agent_runs_total{outcome="failed"}' in metrics
    assert "coca_agent_run_duration_seconds_bucket" in metrics
    assert 'coca_db_pool_connections_max{schema="coca_agent"}' in metrics
    assert 'coca_db_pool_connections_in_use{schema="coca_agent"}' in metrics
