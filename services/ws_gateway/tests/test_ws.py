"""ws_gateway end to end: a real uvicorn server, real Redis and Kafka, the ``websockets`` client."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import Any

import httpx
import orjson
import pytest
from coca_platform.observability import JsonFormatter
from coca_platform.testing import TokenIssuer
from coca_ws_gateway.metrics import SLOW_CLIENTS_DROPPED
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# Fixtures come from conftest.py: `gateway`, `issuer` (mints tokens), `publisher` (writes events as
# the agent does) and `kit` (client helpers).
Gateway = Any
Publisher = Any
Kit = Any

pytestmark = pytest.mark.integration


def _tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def test_authenticates_with_query_token(kit: Kit, gateway: Gateway, issuer: TokenIssuer) -> None:
    tenant = _tenant()
    async with connect(f"{gateway.url}?token={issuer.mint(tenant, 'u-7')}") as ws:
        assert await kit.recv(ws) == {"type": "authenticated", "tenant_id": tenant, "user_id": "u-7"}


async def test_authenticates_with_first_message(kit: Kit, gateway: Gateway, issuer: TokenIssuer) -> None:
    tenant = _tenant()
    async with connect(gateway.url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": issuer.mint(tenant)}).decode())
        assert (await kit.recv(ws))["tenant_id"] == tenant
        await ws.send('{"type":"ping"}')
        assert await kit.recv(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    "first_message",
    [None, '{"type":"auth","token":"not-a-jwt"}', '{"type":"subscribe","conversation_id":"c"}', "{oops"],
)
async def test_bad_or_missing_credentials_close_with_4401(
    kit: Kit, gateway: Gateway, first_message: str | None
) -> None:
    url = gateway.url if first_message is not None else f"{gateway.url}?token=garbage"
    async with connect(url) as ws:
        if first_message is not None:
            await ws.send(first_message)
        error = await kit.recv(ws)
        assert error["type"] == "error"
        assert error["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await kit.recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_token_signed_by_another_key_is_refused(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer
) -> None:
    forger = TokenIssuer(kid=issuer.kid)  # another key under the user service's kid
    async with connect(f"{gateway.url}?token={forger.mint(_tenant())}") as ws:
        assert (await kit.recv(ws))["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            await kit.recv(ws)
    assert ws.close_code == 4401


async def test_silent_client_is_closed_after_the_auth_timeout(kit: Kit, gateway: Gateway) -> None:
    async with connect(gateway.url) as ws:
        assert (await kit.recv(ws, timeout_s=gateway.settings.ws_auth_timeout_s + 5))[
            "code"
        ] == "unauthenticated"
        with pytest.raises(ConnectionClosed):
            await kit.recv(ws)
    assert ws.close_code == 4401


async def test_another_tenants_conversation_is_not_found_and_connection_stays(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    foreign = await publisher.conversation(_tenant())
    async with await kit.open_client(gateway, issuer.mint(_tenant())) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "conversation_id": foreign}).decode())
        error = await kit.recv(ws)
        assert error["type"] == "error"
        assert error["code"] == "not_found"
        assert error["conversation_id"] == foreign
        await ws.send('{"type":"ping"}')
        assert await kit.recv(ws) == {"type": "pong"}


async def test_live_events_arrive_in_order_byte_for_byte(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        await kit.subscribe(ws, conversation)
        sent = [await publisher.publish(tenant, conversation, data={"text": f"t{i}"}) for i in range(20)]
        received = [await kit.recv_raw(ws) for _ in sent]
    assert received == sent
    assert [orjson.loads(r)["seq"] for r in received] == list(range(1, 21))


async def test_resume_after_cursor_has_no_gap_or_duplicate_across_replay_and_live(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    before = [await publisher.publish(tenant, conversation) for _ in range(30)]
    cursor = orjson.loads(before[9])["id"]

    async def publish_more() -> list[bytes]:  # races the subscription's switch from replay to live
        return [await publisher.publish(tenant, conversation) for _ in range(30)]

    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        more = asyncio.create_task(publish_more())
        await kit.subscribe(ws, conversation, after=cursor)
        after = await more
        expected = before[10:] + after
        received = [await kit.recv_raw(ws) for _ in expected]
        assert received == expected
        await ws.send('{"type":"ping"}')  # and nothing else was queued before the pong
        assert await kit.recv(ws) == {"type": "pong"}


async def test_event_missing_from_kafka_is_filled_in_from_the_event_log(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        await kit.subscribe(ws, conversation)
        first = await publisher.publish(tenant, conversation)
        assert await kit.recv_raw(ws) == first
        missing = await publisher.append_only(tenant, conversation)
        third = await publisher.publish(tenant, conversation)
        assert [await kit.recv_raw(ws), await kit.recv_raw(ws)] == [missing, third]


async def test_unknown_cursor_is_not_found(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "conversation_id": conversation, "after": str(uuid.uuid4())}
            ).decode()
        )
        assert (await kit.recv(ws))["code"] == "not_found"


async def test_events_of_other_conversations_and_tenants_are_not_delivered(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    mine, other = await publisher.conversation(tenant), await publisher.conversation(tenant)
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        await kit.subscribe(ws, mine)
        await publisher.publish(tenant, other, data={"text": "other conversation"})
        forged = orjson.dumps(
            {
                "id": str(uuid.uuid4()),
                "type": "message.delta",
                "version": 1,
                "source": "x",
                "time": "2025-01-01T00:00:00Z",
                "tenant_id": _tenant(),
                "subject": mine,
                "seq": 1,
                "data": {"text": "other tenant"},
            }
        )
        await publisher.produce_only(mine, forged)
        marker = await publisher.publish(tenant, mine, data={"text": "mine"})
        assert await kit.recv_raw(ws) == marker


async def test_unsubscribe_stops_delivery(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    a, b = await publisher.conversation(tenant), await publisher.conversation(tenant)
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        await kit.subscribe(ws, a)
        await kit.subscribe(ws, b)
        await ws.send(orjson.dumps({"type": "unsubscribe", "conversation_id": a}).decode())
        assert await kit.recv(ws) == {"type": "unsubscribed", "conversation_id": a}
        await publisher.publish(tenant, a)
        marker = await publisher.publish(tenant, b)
        assert await kit.recv_raw(ws) == marker


async def _count_until_closed(client: Any) -> int:
    got = 0
    try:
        while True:
            await client.recv()
            got += 1
    except EOFError:
        return got


async def test_slow_client_is_disconnected_while_a_fast_one_keeps_receiving(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher, raw_client: Any
) -> None:
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    token = issuer.mint(tenant)
    dropped_before = SLOW_CLIENTS_DROPPED._value.get()
    slow = await raw_client.open(gateway, token)
    try:
        await slow.send(orjson.dumps({"type": "subscribe", "conversation_id": conversation}).decode())
        assert orjson.loads(await slow.recv())["type"] == "subscribed"
        async with await kit.open_client(gateway, token) as fast:
            await kit.subscribe(fast, conversation)
            padding = "x" * 30_000  # fills the slow client's socket buffers, then its server-side queue
            count = 400
            publishing = asyncio.create_task(
                publisher.produce_many(tenant, conversation, [{"i": i, "pad": padding} for i in range(count)])
            )
            received = [orjson.loads(await kit.recv_raw(fast))["data"]["i"] for _ in range(count)]
            await publishing
        assert received == list(range(count))
        assert SLOW_CLIENTS_DROPPED._value.get() == dropped_before + 1
        got = await _count_until_closed(slow)
        assert slow.close_code == 1013
        assert got < count
    finally:
        await slow.close()


async def test_malformed_and_unknown_messages_get_error_frames_and_connection_stays(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer
) -> None:
    async with await kit.open_client(gateway, issuer.mint(_tenant())) as ws:
        for bad in ["{not json", "[1,2]", '{"type":"dance"}', '{"type":"subscribe","conversation_id":7}']:
            await ws.send(bad)
            reply = await kit.recv(ws)
            assert reply["type"] == "error", bad
            assert reply["code"] in ("bad_request", "invalid_argument")
        await ws.send('{"type":"ping"}')
        assert await kit.recv(ws) == {"type": "pong"}


async def test_oversized_message_closes_with_1009(kit: Kit, gateway: Gateway, issuer: TokenIssuer) -> None:
    async with await kit.open_client(gateway, issuer.mint(_tenant())) as ws:
        await ws.send("x" * (gateway.settings.ws_max_message_bytes + 1))
        with pytest.raises(ConnectionClosed):
            await kit.recv(ws)
    assert ws.close_code == 1009


async def test_server_sends_heartbeat_pings(kit: Kit, gateway: Gateway, issuer: TokenIssuer) -> None:
    async with await kit.open_client(gateway, issuer.mint(_tenant())) as ws:
        raw = await asyncio.wait_for(ws.recv(), gateway.settings.ws_heartbeat_s * 4)
        assert orjson.loads(raw) == {"type": "ping"}


async def test_too_many_subscriptions_are_refused(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    tenant = _tenant()
    async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
        for _ in range(gateway.settings.ws_max_subscriptions):
            await kit.subscribe(ws, await publisher.conversation(tenant))
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "conversation_id": await publisher.conversation(tenant)}
            ).decode()
        )
        assert (await kit.recv(ws))["code"] == "too_many_subscriptions"


async def test_run_completed_is_logged_in_the_producers_trace(
    kit: Kit, gateway: Gateway, issuer: TokenIssuer, publisher: Publisher
) -> None:
    trace_id = uuid.uuid4().hex
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("ws_gateway"))
    logger = logging.getLogger("coca_ws_gateway.hub")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    tenant = _tenant()
    conversation = await publisher.conversation(tenant)
    try:
        async with await kit.open_client(gateway, issuer.mint(tenant)) as ws:
            await kit.subscribe(ws, conversation)
            await publisher.publish(
                tenant,
                conversation,
                "run.completed",
                data={"run_id": "r-1"},
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert orjson.loads(await kit.recv_raw(ws))["type"] == "run.completed"
    finally:
        logger.removeHandler(handler)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    delivered = [line for line in lines if line["message"] == "run events delivered"]
    assert delivered
    assert delivered[0]["traceId"] == trace_id
    assert delivered[0]["data"]["conversation_id"] == conversation


async def test_readiness_checks_redis_and_kafka(kit: Kit, gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/readyz")
    assert response.json()["checks"] == {"redis": "ok", "kafka": "ok"}
    assert response.status_code == 200
