"""Channel bindings over HTTP: create (secret shown once, stored encrypted), list, get, delete, and
what is refused: unsupported types, unsafe outbound URLs, other tenants' channels."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from coca_channel.app import create_app
from coca_channel.settings import Settings
from coca_platform.egress import EgressPolicy, egress_session, safe_request
from coca_platform.errors import InvalidArgument
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client

from .conftest import Receiver, Tenant, make_settings


async def _create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> httpx.Response:
    payload = {
        "type": "webhook",
        "agent_id": str(uuid.uuid4()),
        "config": {"outbound_url": "https://example.com/hook"},
    }
    return await client.post("/v1/channels", json=payload | body, headers=tenant.headers)


async def test_create_webhook_channel_returns_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], db: asyncpg.Connection
) -> None:
    tenant = new_tenant()
    agent_id = str(uuid.uuid4())
    created = await _create(client, tenant, agent_id=agent_id)

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["type"] == "webhook"
    assert body["agent_id"] == agent_id
    assert body["config"] == {"outbound_url": "https://example.com/hook"}
    assert body["inbound_url"] == f"https://api.coca.test/v1/channels/{body['id']}/inbound"
    assert body["signing_secret"].startswith("whsec_")
    assert len(body["signing_secret"]) > 40

    stored = await db.fetchval("SELECT secret_encrypted FROM channels WHERE id = $1", uuid.UUID(body["id"]))
    assert body["signing_secret"] not in stored

    fetched = await client.get(f"/v1/channels/{body['id']}", headers=tenant.headers)
    assert fetched.status_code == 200
    assert "signing_secret" not in fetched.json()
    assert fetched.json()["inbound_url"] == body["inbound_url"]


async def test_list_shows_only_the_callers_tenant_channels(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    mine, theirs = new_tenant(), new_tenant()
    first = (await _create(client, mine)).json()["id"]
    second = (await _create(client, mine)).json()["id"]
    await _create(client, theirs)

    listed = await client.get("/v1/channels", headers=mine.headers)

    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()["items"]] == [second, first]
    assert all("signing_secret" not in c for c in listed.json()["items"])


async def test_other_tenants_channel_is_not_found(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    owner, stranger = new_tenant(), new_tenant()
    channel_id = (await _create(client, owner)).json()["id"]

    assert (await client.get(f"/v1/channels/{channel_id}", headers=stranger.headers)).status_code == 404
    deleted = await client.delete(f"/v1/channels/{channel_id}", headers=stranger.headers)
    assert deleted.status_code == 404
    assert deleted.json()["error"]["code"] == "not_found"
    assert (await client.get(f"/v1/channels/{channel_id}", headers=owner.headers)).status_code == 200


async def test_deleted_channel_is_gone(client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]) -> None:
    tenant = new_tenant()
    channel_id = (await _create(client, tenant)).json()["id"]

    assert (await client.delete(f"/v1/channels/{channel_id}", headers=tenant.headers)).status_code == 204

    assert (await client.get(f"/v1/channels/{channel_id}", headers=tenant.headers)).status_code == 404
    assert (await client.delete(f"/v1/channels/{channel_id}", headers=tenant.headers)).status_code == 404
    listed = await client.get("/v1/channels", headers=tenant.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize("type_", ["telegram", "slack", "feishu", "email"])
async def test_types_without_an_adapter_are_refused(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], type_: str
) -> None:
    response = await _create(client, new_tenant(), type=type_)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "channel_type_not_supported"
    assert "not yet supported" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({}, "invalid_argument"),
        ({"outbound_url": "ftp://example.com/hook"}, "egress_refused"),
        ({"outbound_url": "https://user:pw@example.com/hook"}, "egress_refused"),
        ({"outbound_url": "http://169.254.169.254/latest/meta-data"}, "egress_refused"),
        ({"outbound_url": "not a url"}, "egress_refused"),
        ({"outbound_url": "https://example.com/hook", "token": "x"}, "invalid_argument"),
    ],
)
async def test_bad_webhook_config_is_refused(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant], config: dict[str, str], code: str
) -> None:
    response = await _create(client, new_tenant(), config=config)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


async def test_channels_need_an_identity(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/channels")).status_code == 401
    response = await client.post("/v1/channels", json={"type": "webhook", "agent_id": str(uuid.uuid4())})
    assert response.status_code == 401


async def test_default_egress_policy_refuses_loopback_outbound_urls(
    migrated: LocalInfra, amqp_url: str, receiver: Receiver, new_tenant: Callable[[], Tenant]
) -> None:
    """The tests allow 127.0.0.1 explicitly; without that, the same receiver is refused at creation
    (an IP literal) and at connect time."""
    default = make_settings(migrated, amqp_url, egress_allowed_hosts="")
    assert default.egress_policy() == EgressPolicy()
    tenant = new_tenant()
    async with asgi_client(create_app(default)) as strict:
        response = await _create(strict, tenant, config={"outbound_url": f"{receiver.url}/hook"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "egress_refused"

    async with egress_session(EgressPolicy(), timeout_s=2) as session:
        with pytest.raises(InvalidArgument) as refused:
            await safe_request(
                session, "POST", f"{receiver.url}/hook", policy=EgressPolicy(), max_response_bytes=1024
            )
    assert refused.value.code == "egress_refused"
    assert receiver.hits["hook"] == []


def test_settings_default_to_the_brief(settings: Settings) -> None:
    defaults = Settings()
    assert defaults.signature_tolerance_s == 300
    assert defaults.notification_max_attempts == 4
    assert defaults.http_port == 8003
    assert defaults.egress_policy() == EgressPolicy()
