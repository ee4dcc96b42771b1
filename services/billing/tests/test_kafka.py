"""Usage records through a real Kafka-protocol broker: the service's own consumer counts a twice-delivered
record once, a crash between the effect and the offset commit neither loses nor doubles a record, and
an invalid record is dead-lettered while the valid ones around it are counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from coca_billing.app import create_app
from coca_billing.settings import Settings
from coca_platform import kafka
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client, create_topic

# Fixtures come from conftest.py: `billing` (a Billing over the shared app, consumer off), `handle` (the
# consumer's batch handler), `envelope(tenant_id, run_id, prompt, completion, **kw)`, `settings_with`,
# `db` (a connection in schema coca_billing).
Billing = Any
Handle = Callable[[list[kafka.Record]], Awaitable[None]]
MakeEnvelope = Callable[..., Any]

TIMEOUT_S = 60


@pytest.fixture(scope="module")
async def producer(infra: LocalInfra) -> AsyncIterator[kafka.KafkaProducer]:
    async with kafka.open_producer(infra.kafka_bootstrap, client_id="billing-tests") as p:
        yield p


@pytest.fixture(scope="module")
async def consuming(
    migrated: LocalInfra, settings_with: Callable[..., Settings]
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app with its usage consumer on a topic of its own (4 partitions, as usage.records)."""
    topic = f"usage.records.t-{uuid.uuid4().hex[:12]}"
    await create_topic(migrated.kafka_bootstrap, topic, partitions=4)
    app_settings = settings_with(
        usage_consumer_enabled=True, usage_topic=topic, usage_consumer_group=f"billing-{uuid.uuid4().hex[:8]}"
    )
    async with asgi_client(create_app(app_settings)) as http:
        yield topic, http


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not await check():
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what} was not recorded within {TIMEOUT_S} s") from None


async def _recorded(db: asyncpg.Connection, event_id: str) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM usage_records WHERE event_id = $1", event_id))


async def test_the_service_counts_a_record_kafka_delivers_twice_once(
    consuming: tuple[str, httpx.AsyncClient],
    producer: kafka.KafkaProducer,
    billing: Billing,
    envelope: MakeEnvelope,
    db: asyncpg.Connection,
) -> None:
    topic, http = consuming
    tenant = billing.tenant()
    usage = envelope(tenant.id, str(uuid.uuid4()), 300, 200)
    marker = envelope(tenant.id, str(uuid.uuid4()), 1, 0)

    for value in (usage, usage, marker):  # one key: one partition, in this order
        await producer.produce(topic, value.to_json(), key=tenant.id)
    await _eventually(lambda: _recorded(db, marker.id), "the marker record")

    ready = await http.get("/readyz")
    listed = (await billing.usage(tenant)).json()
    assert ready.status_code == 200, ready.text
    assert listed["totals"]["prompt_tokens"] == 301
    assert listed["totals"]["completion_tokens"] == 200
    assert await db.fetchval("SELECT count(*) FROM usage_records WHERE event_id = $1", usage.id) == 1


async def test_an_invalid_record_goes_to_the_dead_letter_topic_and_the_rest_count(
    consuming: tuple[str, httpx.AsyncClient],
    producer: kafka.KafkaProducer,
    billing: Billing,
    envelope: MakeEnvelope,
    db: asyncpg.Connection,
    infra: LocalInfra,
) -> None:
    topic, _ = consuming
    tenant = billing.tenant()
    before, after = envelope(tenant.id, "before", 10, 0), envelope(tenant.id, "after", 20, 0)
    poison = b'{"type": "usage.recorded", "tenant_id": "' + tenant.id.encode() + b'", "broken": true}'

    for value in (before.to_json(), poison, after.to_json()):
        await producer.produce(topic, value, key=tenant.id)
    await _eventually(lambda: _recorded(db, after.id), "the record after the poison one")

    dead: list[kafka.Record] = []
    stop = asyncio.Event()
    async with (
        kafka.open_tail(infra.kafka_bootstrap, f"{topic}.dlq", start="beginning") as reader,
        asyncio.timeout(TIMEOUT_S),
    ):
        async for batch in reader.batches(stop):
            dead += [r for r in batch if r.key == tenant.id.encode()]
            if dead:
                stop.set()
    assert [r.value for r in dead] == [poison]
    assert dead[0].headers["dlq.error.code"] == b"invalid_usage_record"
    assert dead[0].headers["dlq.topic"] == topic.encode()
    assert (await billing.usage(tenant)).json()["totals"]["prompt_tokens"] == 30


class Crash(Exception):
    """The process dying after the handler's transaction committed, before the offsets were committed."""


async def test_a_crash_between_the_effect_and_the_offset_commit_neither_loses_nor_doubles(
    infra: LocalInfra,
    producer: kafka.KafkaProducer,
    handle: Handle,
    billing: Billing,
    envelope: MakeEnvelope,
    db: asyncpg.Connection,
) -> None:
    topic, group = f"usage.records.t-{uuid.uuid4().hex[:12]}", f"billing-{uuid.uuid4().hex[:8]}"
    await create_topic(infra.kafka_bootstrap, topic, partitions=4)
    tenant = await billing.with_quota(10_000)
    run_id = str(uuid.uuid4())
    assert (await billing.reserve(tenant, 5000, run_id=run_id)).status_code == 201
    usage = envelope(tenant.id, run_id, 400, 100)
    await producer.produce(topic, usage.to_json(), key=tenant.id)

    async def crash_after_the_effect(batch: list[kafka.Record]) -> None:
        await handle(batch)
        raise Crash

    async def consume(handler: Handle, stop: asyncio.Event) -> None:
        await asyncio.wait_for(
            kafka.run_consumer(
                infra.kafka_bootstrap, group_id=group, topics=[topic], handler=handler, stop=stop
            ),
            TIMEOUT_S,
        )

    with pytest.raises(Crash):
        await consume(crash_after_the_effect, asyncio.Event())
    assert await _recorded(db, usage.id)

    seen: list[bytes] = []
    restarted = asyncio.Event()

    async def after_restart(batch: list[kafka.Record]) -> None:
        seen.extend(r.value for r in batch)
        await handle(batch)
        restarted.set()

    await consume(after_restart, restarted)

    assert seen == [usage.to_json()]  # redelivered: its offset was never committed
    balance = await billing.balance(tenant)
    entries = await db.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE tenant_id = $1", uuid.UUID(tenant.id)
    )
    assert (balance["used_tokens"], balance["reserved_tokens"], balance["cost_micros"]) == (500, 0, 60)
    assert entries == 2  # one balanced transaction, not two

    later = envelope(tenant.id, str(uuid.uuid4()), 1, 1)
    await producer.produce(topic, later.to_json(), key=tenant.id)
    seen.clear()
    done = asyncio.Event()

    async def third_start(batch: list[kafka.Record]) -> None:
        seen.extend(r.value for r in batch)
        await handle(batch)
        done.set()

    await consume(third_start, done)
    assert seen == [later.to_json()]  # the restart committed: the first record is not delivered again
