"""The per-conversation event log on a real Redis."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator

import orjson
import pytest
from coca_platform.cache import Redis, open_redis
from coca_platform.envelope import new_envelope
from coca_platform.errors import NotFound
from coca_platform.eventlog import EventLog
from coca_platform.localinfra import LocalInfra


@pytest.fixture
async def log(infra: LocalInfra) -> AsyncIterator[EventLog]:
    async with open_redis(infra.redis_url) as redis:
        yield EventLog(redis, ttl_s=60)


def _env(subject: str, n: int) -> object:
    return new_envelope(
        "message.delta", source="test", tenant_id="ten", subject=subject, data={"text": str(n)}
    )


async def test_append_assigns_increasing_seq_and_resumes_after_cursor(
    log: EventLog, unique: types.FunctionType
) -> None:
    subject = unique("conv")
    appended = [await log.append(_env(subject, i)) for i in range(5)]  # type: ignore[arg-type]
    seqs = [orjson.loads(raw)["seq"] for _, raw in appended]
    assert seqs == [1, 2, 3, 4, 5]
    third_id = orjson.loads(appended[2][1])["id"]
    after = await log.read_after(subject, await log.position(subject, third_id))
    assert [orjson.loads(raw)["seq"] for _, raw in after] == [4, 5]
    everything = await log.read_after(subject, await log.position(subject, None))
    assert len(everything) == 5


async def test_unknown_cursor_is_not_found(log: EventLog, unique: types.FunctionType) -> None:
    with pytest.raises(NotFound):
        await log.position(unique("conv"), "no-such-event")


async def test_follow_yields_live_events(log: EventLog, unique: types.FunctionType) -> None:
    subject = unique("conv")
    received: list[int] = []

    async def reader() -> None:
        async for batch in log.follow(subject, "0-0", block_ms=200):
            received.extend(orjson.loads(raw)["seq"] for _, raw in batch)
            if len(received) >= 3:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    for i in range(3):
        await log.append(_env(subject, i))  # type: ignore[arg-type]
    await asyncio.wait_for(task, 5)
    assert received == [1, 2, 3]


async def test_owner_check_hides_other_tenants(log: EventLog, unique: types.FunctionType) -> None:
    subject = unique("conv")
    await log.set_owner(subject, "tenant-a")
    await log.check_owner(subject, "tenant-a")
    with pytest.raises(NotFound):
        await log.check_owner(subject, "tenant-b")
    with pytest.raises(NotFound):
        await log.check_owner(unique("conv"), "tenant-a")


async def test_redis_client_is_real(infra: LocalInfra) -> None:
    async with open_redis(infra.redis_url) as redis:
        assert isinstance(redis, Redis)
        assert await redis.ping()


async def test_append_keeps_bytes_verbatim_and_refreshes_owner(
    log: EventLog, unique: types.FunctionType, infra: LocalInfra
) -> None:
    subject = unique("conv")
    await log.set_owner(subject, "ten")
    env = new_envelope(
        "tool.call",
        source="test",
        tenant_id="ten",
        subject=subject,
        data={"args": [], "nested": {"empty": {}}, "text": 'ünïcode "q"'},
    )
    _, raw = await log.append(env)
    assert orjson.loads(raw) == {**orjson.loads(env.to_json()), "seq": 1}
    assert raw.startswith(env.to_json()[:-1])
    async with open_redis(infra.redis_url) as redis:
        assert await redis.ttl(f"coca:evown:{subject}") > 0


async def test_a_burst_wider_than_the_pool_waits_for_connections(
    infra: LocalInfra, unique: types.FunctionType
) -> None:
    async with open_redis(infra.redis_url, max_connections=2) as redis:
        key = unique("empty")
        # Ten blocking reads at once on a pool of two: they queue for connections instead of failing.
        results = await asyncio.gather(*(redis.blpop([key], timeout=0.2) for _ in range(10)))
    assert results == [None] * 10
