"""A provider's message: signed, fresh and new → one row and one envelope on ``channel.inbound.webhook``;
anything else refused without a trace downstream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from coca_channel.signatures import sign, signed_headers
from coca_platform.envelope import Envelope

from .conftest import Tenant

QUEUE = "channel.inbound.webhook"
Take = Callable[..., Awaitable[list[Any]]]


@pytest.fixture
async def channel(client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]) -> dict[str, Any]:
    tenant = new_tenant()
    body = {
        "type": "webhook",
        "agent_id": str(uuid.uuid4()),
        "config": {"outbound_url": "https://example.com/h"},
    }
    response = await client.post("/v1/channels", json=body, headers=tenant.headers)
    assert response.status_code == 201
    created: dict[str, Any] = response.json()
    return created | {"tenant_id": tenant.id}


def _message(**fields: Any) -> bytes:
    return orjson.dumps({"id": f"msg-{uuid.uuid4().hex}", "text": "hello agent"} | fields)


async def _send(
    client: httpx.AsyncClient, channel: dict[str, Any], body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    headers = signed_headers(channel["signing_secret"], body) if headers is None else headers
    return await client.post(f"/v1/channels/{channel['id']}/inbound", content=body, headers=headers)


def _for(inbound_id: str) -> Callable[[Any], bool]:
    return lambda message: message.message_id == inbound_id


async def test_signed_message_is_accepted_and_published_for_the_agent(
    client: httpx.AsyncClient, channel: dict[str, Any], take: Take, db: asyncpg.Connection
) -> None:
    body = _message(sender={"id": "u-1", "name": "Ada"}, thread_id="t-9")

    response = await _send(client, channel, body)

    assert response.status_code == 202, response.text
    inbound_id = response.json()["id"]
    assert response.json()["duplicate"] is False
    (message,) = await take(QUEUE, _for(inbound_id))
    envelope = Envelope.from_json(message.body)
    assert envelope.type == "channel.message.received"
    assert envelope.id == inbound_id
    assert envelope.tenant_id == channel["tenant_id"]
    assert envelope.subject == channel["id"]
    assert envelope.data == {
        "channel_id": channel["id"],
        "agent_id": channel["agent_id"],
        "thread_id": "t-9",
        "sender": {"id": "u-1", "name": "Ada"},
        "text": "hello agent",
        "inbound_id": inbound_id,
        "message_id": orjson.loads(body)["id"],
    }
    row = await db.fetchrow(
        "SELECT tenant_id, external_id, published_at FROM inbound_messages WHERE id = $1",
        uuid.UUID(inbound_id),
    )
    assert str(row["tenant_id"]) == channel["tenant_id"]
    assert row["external_id"] == orjson.loads(body)["id"]
    assert row["published_at"] is not None


async def test_duplicate_provider_message_is_accepted_once(
    client: httpx.AsyncClient, channel: dict[str, Any], take: Take, db: asyncpg.Connection
) -> None:
    body = _message()
    first = await _send(client, channel, body)
    # The provider redelivers the same message id in a freshly signed request.
    again = await _send(
        client, channel, body, signed_headers(channel["signing_secret"], body, time.time() + 1)
    )

    assert first.status_code == again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    published = await take(QUEUE, _for(first.json()["id"]), settle_s=0.5)
    assert len(published) == 1
    count = await db.fetchval(
        "SELECT count(*) FROM inbound_messages WHERE channel_id = $1", uuid.UUID(channel["id"])
    )
    assert count == 1


async def test_unsigned_request_is_rejected(client: httpx.AsyncClient, channel: dict[str, Any]) -> None:
    response = await _send(client, channel, _message(), headers={})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature_missing"


async def test_wrong_signature_is_rejected(client: httpx.AsyncClient, channel: dict[str, Any]) -> None:
    body = _message()
    forged = signed_headers("whsec_not-the-channels-secret", body)
    tampered = signed_headers(channel["signing_secret"], body)

    wrong_secret = await _send(client, channel, body, forged)
    other_body = await _send(client, channel, _message(text="something else"), tampered)

    for response in (wrong_secret, other_body):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "signature_invalid"


@pytest.mark.parametrize("skew_s", [-301, 301])
async def test_stale_or_future_timestamp_is_rejected(
    client: httpx.AsyncClient, channel: dict[str, Any], skew_s: int
) -> None:
    body = _message()
    headers = signed_headers(channel["signing_secret"], body, now=time.time() + skew_s)

    response = await _send(client, channel, body, headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "timestamp_stale"


async def test_timestamp_inside_the_tolerance_is_accepted(
    client: httpx.AsyncClient, channel: dict[str, Any], take: Take
) -> None:
    body = _message()
    headers = signed_headers(channel["signing_secret"], body, now=time.time() - 250)

    response = await _send(client, channel, body, headers)

    assert response.status_code == 202
    await take(QUEUE, _for(response.json()["id"]))


async def test_replayed_request_is_rejected(
    client: httpx.AsyncClient, channel: dict[str, Any], take: Take
) -> None:
    body = _message()
    headers = signed_headers(channel["signing_secret"], body)

    first = await _send(client, channel, body, headers)
    replay = await _send(client, channel, body, headers)

    assert first.status_code == 202
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "replayed_request"
    assert len(await take(QUEUE, _for(first.json()["id"]), settle_s=0.3)) == 1


async def test_rejected_body_does_not_burn_the_signature(
    client: httpx.AsyncClient, channel: dict[str, Any]
) -> None:
    """A request refused after its signature was checked can be sent again (and is refused the same
    way, not as a replay)."""
    body = b'{"id": "m-1"}'
    headers = signed_headers(channel["signing_secret"], body)

    first = await _send(client, channel, body, headers)
    second = await _send(client, channel, body, headers)

    assert first.status_code == second.status_code == 422
    assert second.json()["error"]["code"] == "invalid_argument"


async def test_signature_header_may_list_several_signatures(
    client: httpx.AsyncClient, channel: dict[str, Any], take: Take
) -> None:
    body = _message()
    timestamp = int(time.time())
    rotating = (
        f"{sign('whsec_old-secret', timestamp, body)}, {sign(channel['signing_secret'], timestamp, body)}"
    )
    headers = {"X-Coca-Timestamp": str(timestamp), "X-Coca-Signature": rotating}

    response = await _send(client, channel, body, headers)

    assert response.status_code == 202
    await take(QUEUE, _for(response.json()["id"]))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "bad_request"),
        (b'{"text": "no id"}', 422, "invalid_argument"),
        (b'{"id": "m", "text": ""}', 422, "invalid_argument"),
        (b'{"id": "m", "text": "x", "sender": {"name": "no id"}}', 422, "invalid_argument"),
        (orjson.dumps({"id": "m", "text": "x" * 16_001}), 422, "text_too_long"),
    ],
)
async def test_malformed_signed_body_is_refused(
    client: httpx.AsyncClient, channel: dict[str, Any], body: bytes, status: int, code: str
) -> None:
    response = await _send(client, channel, body)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_oversized_body_is_refused(client: httpx.AsyncClient, channel: dict[str, Any]) -> None:
    body = _message(text="x" * 70_000)

    response = await _send(client, channel, body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_unknown_or_deleted_channel_is_not_found(
    client: httpx.AsyncClient, channel: dict[str, Any], new_tenant: Callable[[], Tenant]
) -> None:
    body = _message()
    headers = signed_headers(channel["signing_secret"], body)
    unknown = await client.post(f"/v1/channels/{uuid.uuid4()}/inbound", content=body, headers=headers)
    malformed = await client.post("/v1/channels/not-an-id/inbound", content=body, headers=headers)

    assert unknown.status_code == malformed.status_code == 404

    owner = new_tenant()
    created = await client.post(
        "/v1/channels",
        json={
            "type": "webhook",
            "agent_id": str(uuid.uuid4()),
            "config": {"outbound_url": "https://example.com"},
        },
        headers=owner.headers,
    )
    gone = created.json()
    await client.delete(f"/v1/channels/{gone['id']}", headers=owner.headers)
    assert (await _send(client, gone, body)).status_code == 404
