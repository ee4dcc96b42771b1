"""Replies on ``channel.outbound`` → POSTed, signed, to the channel's outbound URL; retried with backoff,
then dead-lettered into ``channel.outbound.dlq`` with the row ``dead``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from coca_channel.signatures import verify
from coca_platform.amqp import ATTEMPT, REASON
from coca_platform.envelope import Envelope, new_envelope
from coca_platform.testing import free_port

from .conftest import OUTBOUND_MAX_ATTEMPTS, Receiver, Tenant

DLQ = "channel.outbound.dlq"
Take = Callable[..., Awaitable[list[Any]]]
Publish = Callable[[str, str, Envelope], Awaitable[None]]
WaitFor = Callable[..., Awaitable[None]]


@pytest.fixture
def make_channel(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> Callable[[str], Awaitable[dict[str, Any]]]:
    async def make(outbound_url: str) -> dict[str, Any]:
        tenant = new_tenant()
        body = {"type": "webhook", "agent_id": str(uuid.uuid4()), "config": {"outbound_url": outbound_url}}
        response = await client.post("/v1/channels", json=body, headers=tenant.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created | {"tenant_id": tenant.id}

    return make


def _reply(channel: dict[str, Any], tenant_id: str | None = None, text: str = "hi there") -> Envelope:
    data = {"channel_id": channel["id"], "thread_id": "t-1", "text": text, "in_reply_to": "msg-1"}
    return new_envelope(
        "channel.message.reply", source="agent", tenant_id=tenant_id or channel["tenant_id"],
        subject=channel["id"], data=data,
    )  # fmt: skip


async def _row(db: asyncpg.Connection, envelope_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT status, attempts, last_error, delivered_at FROM outbound_messages WHERE envelope_id = $1",
        envelope_id,
    )


def _for(envelope_id: str) -> Callable[[Any], bool]:
    return lambda message: message.message_id == envelope_id


async def test_reply_is_delivered_signed_to_the_outbound_url(
    client: httpx.AsyncClient,
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    wait_for: WaitFor,
    db: asyncpg.Connection,
) -> None:
    name = f"ok-{uuid.uuid4().hex}"
    channel = await make_channel(f"{receiver.url}/{name}")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)

    await wait_for(lambda: receiver.hits[name])
    (hit,) = receiver.hits[name]
    verify(
        channel["signing_secret"], hit.headers["X-Coca-Timestamp"], hit.headers["X-Coca-Signature"], hit.body,
        tolerance_s=60,
    )  # fmt: skip
    assert hit.headers["X-Coca-Delivery-Id"] == reply.id
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.json() == {
        "id": reply.id,
        "type": "message.reply",
        "channel_id": channel["id"],
        "thread_id": "t-1",
        "text": "hi there",
        "in_reply_to": "msg-1",
        "time": reply.time,
    }
    await wait_for(lambda: _delivered(db, reply.id))
    row = await _row(db, reply.id)
    assert row is not None
    assert (row["attempts"], row["last_error"]) == (1, None)
    assert row["delivered_at"] is not None


async def _delivered(db: asyncpg.Connection, envelope_id: str) -> bool:
    row = await _row(db, envelope_id)
    return row is not None and row["status"] == "delivered"


async def test_redelivered_reply_is_not_sent_twice(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    wait_for: WaitFor,
    db: asyncpg.Connection,
) -> None:
    name = f"once-{uuid.uuid4().hex}"
    channel = await make_channel(f"{receiver.url}/{name}")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)
    await wait_for(lambda: _delivered(db, reply.id))
    await publish("channel.outbound", "channel.outbound", reply)  # the agent published it again
    await asyncio.sleep(0.5)

    assert len(receiver.hits[name]) == 1
    row = await _row(db, reply.id)
    assert row is not None
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_failing_receiver_gets_exactly_max_attempts_then_dead_letter(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    take: Take,
    db: asyncpg.Connection,
) -> None:
    name = f"down-{uuid.uuid4().hex}"
    receiver.statuses[name] = 503
    channel = await make_channel(f"{receiver.url}/{name}")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)

    (dead,) = await take(DLQ, _for(reply.id), timeout_s=15)
    await asyncio.sleep(0.5)  # no further attempt after the dead letter
    assert len(receiver.hits[name]) == OUTBOUND_MAX_ATTEMPTS
    assert dead.headers[REASON] == "max_attempts"
    assert dead.headers[ATTEMPT] == OUTBOUND_MAX_ATTEMPTS
    row = await _row(db, reply.id)
    assert row is not None
    assert (row["status"], row["attempts"]) == ("dead", OUTBOUND_MAX_ATTEMPTS)
    assert "503" in row["last_error"]


async def test_unreachable_outbound_url_ends_in_the_dead_letter_queue(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    publish: Publish,
    take: Take,
    db: asyncpg.Connection,
) -> None:
    channel = await make_channel(f"http://127.0.0.1:{free_port()}/nobody-listens")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)

    (dead,) = await take(DLQ, _for(reply.id), timeout_s=15)
    assert dead.headers[REASON] == "max_attempts"
    row = await _row(db, reply.id)
    assert row is not None
    assert (row["status"], row["attempts"]) == ("dead", OUTBOUND_MAX_ATTEMPTS)
    assert row["last_error"].startswith("unavailable")


async def test_receiver_refusing_the_reply_is_not_retried(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    take: Take,
    db: asyncpg.Connection,
) -> None:
    name = f"gone-{uuid.uuid4().hex}"
    receiver.statuses[name] = 410
    channel = await make_channel(f"{receiver.url}/{name}")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)

    (dead,) = await take(DLQ, _for(reply.id))
    assert dead.headers[REASON] == "non_retryable"
    assert len(receiver.hits[name]) == 1
    row = await _row(db, reply.id)
    assert row is not None
    assert (row["status"], row["attempts"]) == ("dead", 1)


@pytest.mark.parametrize("status", [408, 429])
async def test_timeout_and_rate_limit_answers_are_retried(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    take: Take,
    status: int,
) -> None:
    name = f"busy-{uuid.uuid4().hex}"
    receiver.statuses[name] = status
    channel = await make_channel(f"{receiver.url}/{name}")
    reply = _reply(channel)

    await publish("channel.outbound", "channel.outbound", reply)

    await take(DLQ, _for(reply.id), timeout_s=15)
    assert len(receiver.hits[name]) == OUTBOUND_MAX_ATTEMPTS


async def test_reply_for_another_tenants_channel_is_dead_lettered_unsent(
    make_channel: Callable[[str], Awaitable[dict[str, Any]]],
    receiver: Receiver,
    publish: Publish,
    take: Take,
    db: asyncpg.Connection,
) -> None:
    name = f"victim-{uuid.uuid4().hex}"
    channel = await make_channel(f"{receiver.url}/{name}")
    forged = _reply(channel, tenant_id=str(uuid.uuid4()))

    await publish("channel.outbound", "channel.outbound", forged)

    (dead,) = await take(DLQ, _for(forged.id))
    assert dead.headers[REASON] == "non_retryable"
    assert receiver.hits[name] == []
    assert await _row(db, forged.id) is None
