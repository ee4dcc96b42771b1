"""coca_platform.kafka against the real Kafka-protocol broker (and Redis / PostgreSQL for dedupe)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from coca_platform import kafka
from coca_platform.cache import open_redis
from coca_platform.errors import InvalidArgument, Unavailable
from coca_platform.kafka import Record

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, items: list[tuple[str, bytes]], **headers: str) -> None:
    async with kafka.open_producer(bootstrap, client_id="test") as producer:
        await asyncio.gather(*(producer.produce_nowait(topic, v, key=k, headers=headers) for k, v in items))


async def _consume_until(
    bootstrap: str,
    group: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    on_batch: Callable[[list[Record]], Awaitable[None]] | None = None,
    timeout_s: float = 40,
) -> list[Record]:
    """Run a consumer until ``done(handled)``; returns the records handed to the handler, in order."""
    stop = asyncio.Event()
    handled: list[Record] = []

    async def handler(batch: list[Record]) -> None:
        if on_batch is not None:
            await on_batch(batch)
        handled.extend(batch)
        if done(handled):
            stop.set()

    await asyncio.wait_for(
        kafka.run_consumer(
            bootstrap, group_id=group, topics=[topic], handler=handler, stop=stop, poll_timeout_s=0.2
        ),
        timeout_s,
    )
    return handled


async def test_produced_records_arrive_with_key_value_and_headers(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (2, 3_600_000)})
    await _produce(
        infra.kafka_bootstrap, topic, [("conv-1", b'{"n":1}'), ("conv-1", b'{"n":2}')], source="test"
    )

    handled = await _consume_until(infra.kafka_bootstrap, unique("g"), topic, lambda h: len(h) >= 2)

    assert [r.value for r in handled] == [b'{"n":1}', b'{"n":2}']  # one key: one partition, in order
    assert {r.key for r in handled} == {b"conv-1"}
    assert handled[0].headers["source"] == b"test"
    assert handled[0].offset + 1 == handled[1].offset


async def test_create_topics_is_idempotent(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (3, None)})
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (3, None)})
    async with kafka.open_tail(infra.kafka_bootstrap, topic) as reader:
        assert reader.topic == topic


async def test_batch_is_redelivered_after_restart_when_handler_failed(infra: Any, unique: Any) -> None:
    topic, group = unique("kt"), unique("g")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (1, None)})
    await _produce(infra.kafka_bootstrap, topic, [("k", f"m{i}".encode()) for i in range(5)])

    async def crash(_: list[Record]) -> None:
        raise RuntimeError("bug in the handler")

    with pytest.raises(RuntimeError):
        await _consume_until(infra.kafka_bootstrap, group, topic, lambda h: True, on_batch=crash)

    handled = await _consume_until(infra.kafka_bootstrap, group, topic, lambda h: len(h) >= 5)
    assert [r.value for r in handled] == [f"m{i}".encode() for i in range(5)]

    # Committed now: a later consumer of the group sees only what is new.
    await _produce(infra.kafka_bootstrap, topic, [("k", b"m5")])
    later = await _consume_until(infra.kafka_bootstrap, group, topic, lambda h: len(h) >= 1)
    assert [r.value for r in later] == [b"m5"]


async def test_retryable_error_retries_the_same_batch(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (1, None)})
    await _produce(infra.kafka_bootstrap, topic, [("k", b"a"), ("k", b"b")])
    attempts = 0

    async def flaky(_: list[Record]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Unavailable("database is down")

    handled = await _consume_until(
        infra.kafka_bootstrap, unique("g"), topic, lambda h: len(h) >= 2, on_batch=flaky
    )
    assert [r.value for r in handled] == [b"a", b"b"]
    assert attempts >= 2


async def test_duplicate_event_ids_are_handled_once(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (1, None)})
    event_id = str(uuid.uuid4())
    await _produce(
        infra.kafka_bootstrap, topic, [("k", event_id.encode()), ("k", event_id.encode()), ("k", b"other")]
    )
    effects: list[bytes] = []
    async with open_redis(infra.redis_url) as redis:
        deduper = kafka.RedisDeduper(redis, unique("ns"), ttl_s=60)

        async def apply(batch: list[Record]) -> None:
            fresh = await deduper.first_seen([r.value.decode() for r in batch])
            effects.extend(r.value for r, new in zip(batch, fresh, strict=True) if new)

        await _consume_until(infra.kafka_bootstrap, unique("g"), topic, lambda h: len(h) >= 3, on_batch=apply)
        assert effects == [event_id.encode(), b"other"]
        assert await deduper.first_seen([event_id]) == [False]  # also across batches and restarts


async def test_pg_first_seen_claims_inside_the_effect_transaction(infra: Any, unique: Any) -> None:
    schema = unique("s").replace("-", "_")
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path TO {schema}")
        await conn.execute(kafka.PROCESSED_EVENTS_DDL)
        tx = conn.transaction()
        await tx.start()
        assert await kafka.pg_first_seen(conn, "e1", "billing")
        await tx.rollback()  # the effect failed: the claim rolls back with it
        async with conn.transaction():
            assert await kafka.pg_first_seen(conn, "e1", "billing")
        async with conn.transaction():
            assert not await kafka.pg_first_seen(conn, "e1", "billing")
            assert await kafka.pg_first_seen(conn, "e1", "memory")  # each consumer has its own claims
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_poison_record_goes_to_dlq_and_consumer_moves_on(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (1, None)})
    await _produce(
        infra.kafka_bootstrap,
        topic,
        [("k", b"ok-1"), ("k", b"poison"), ("k", b"ok-2")],
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    applied: list[bytes] = []

    async def apply(batch: list[Record]) -> None:
        if any(r.value == b"poison" for r in batch):
            raise InvalidArgument("cannot parse the event")
        applied.extend(r.value for r in batch)

    await _consume_until(
        infra.kafka_bootstrap, unique("g"), topic, lambda h: b"ok-2" in applied, on_batch=apply
    )
    assert applied == [b"ok-1", b"ok-2"]

    stop = asyncio.Event()
    async with kafka.open_tail(infra.kafka_bootstrap, f"{topic}.dlq", start="beginning") as reader:
        batch = await asyncio.wait_for(anext(reader.batches(stop)), 20)
    (dead,) = batch
    assert dead.value == b"poison"
    assert dead.key == b"k"
    assert dead.headers["dlq.error.code"] == b"invalid_argument"
    assert dead.headers["dlq.topic"] == topic.encode()
    assert dead.headers["dlq.offset"] == b"1"
    assert dead.headers["traceparent"].startswith(b"00-0af7651916cd43dd8448eb211c80319c")


async def test_tail_sees_messages_produced_after_it_started_on_all_partitions(
    infra: Any, unique: Any
) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (4, None)})
    await _produce(infra.kafka_bootstrap, topic, [("before", b"old")])
    stop = asyncio.Event()
    seen: list[Record] = []
    async with kafka.open_tail(infra.kafka_bootstrap, topic) as reader:
        await _produce(infra.kafka_bootstrap, topic, [(f"conv-{i}", f"new-{i}".encode()) for i in range(40)])
        async with asyncio.timeout(20):
            async for batch in reader.batches(stop, poll_timeout_s=0.2):
                seen.extend(batch)
                if len(seen) >= 40:
                    break
    assert sorted(r.value for r in seen) == sorted(f"new-{i}".encode() for i in range(40))
    assert {r.partition for r in seen} == {0, 1, 2, 3}


async def test_tail_generator_stops_when_asked(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (2, None)})
    await _produce(infra.kafka_bootstrap, topic, [("a", b"1"), ("b", b"2")])
    stop = asyncio.Event()
    seen: list[bytes] = []
    async with asyncio.timeout(20):
        async for batch in kafka.tail(infra.kafka_bootstrap, topic, stop=stop, start="beginning"):
            seen.extend(r.value for r in batch)
            if len(seen) >= 2:
                stop.set()
    assert sorted(seen) == [b"1", b"2"]


async def test_produce_nowait_futures_resolve_and_ping_answers(infra: Any, unique: Any) -> None:
    topic = unique("kt")
    await kafka.create_topics(infra.kafka_bootstrap, {topic: (2, None)})
    async with kafka.open_producer(infra.kafka_bootstrap, client_id="test") as producer:
        await producer.ping()
        futures = [producer.produce_nowait(topic, b"x" * 100, key=str(i)) for i in range(500)]
        await asyncio.wait_for(asyncio.gather(*futures), 20)
        assert all(f.done() and f.exception() is None for f in futures)
        assert await producer.flush(5) == 0


async def test_ping_fails_with_unavailable_when_no_broker_answers() -> None:
    from coca_platform.testing import free_port

    async with kafka.open_producer(f"127.0.0.1:{free_port()}", client_id="test", close_timeout_s=0.1) as p:
        with pytest.raises(Unavailable):
            await p.ping(timeout_s=0.5)
