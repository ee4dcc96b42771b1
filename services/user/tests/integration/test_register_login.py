"""Registration and login: validation, password hashing, lockout, audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from coca_platform.localinfra import LocalInfra
from coca_platform.testing import asgi_client
from coca_user.app import create_app
from coca_user.settings import Settings

# Fixtures come from ../conftest.py; an account there has .email, .password, .user, .user_id, .tenant_id.
Register = Callable[..., Awaitable[Any]]
MAX_FAILURES = 3  # the tests' LOGIN_MAX_FAILURES (conftest.make_settings)


async def _audit_actions(db: asyncpg.Connection, account: Any) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM audit_log WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, action",
        uuid.UUID(account.tenant_id),
        uuid.UUID(account.user_id),
    )
    return [r["action"] for r in rows]


async def test_register_creates_an_owner_in_a_new_tenant(register: Register, db: asyncpg.Connection) -> None:
    first = await register(tenant_name="Analytical Engines")
    second = await register()

    assert first.user["role"] == "owner"
    assert first.user["email"] == first.email
    assert first.user["display_name"] == "Ada Lovelace"
    assert set(first.user) == {"id", "email", "display_name", "tenant_id", "role", "created_at"}
    assert first.tenant_id != second.tenant_id
    tenant_name = await db.fetchval("SELECT name FROM tenants WHERE id = $1", uuid.UUID(first.tenant_id))
    assert tenant_name == "Analytical Engines"
    assert await _audit_actions(db, first) == ["user.registered"]


async def test_register_rejects_a_duplicate_email_whatever_its_case(
    client: httpx.AsyncClient, register: Register
) -> None:
    account = await register()
    body = {"email": account.email.upper(), "password": "another password", "display_name": "Other"}

    response = await client.post("/v1/auth/register", json=body)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_exists"


async def test_register_rejects_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/auth/register", content=b'{"email": "a@b.co",', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "long enough password", "display_name": "X"}, "email"),
        ({"email": "x@example.com", "display_name": "X"}, "password"),
        ({"email": "x@example.com", "password": "long enough password"}, "display_name"),
        ({"email": "not-an-email", "password": "long enough password", "display_name": "X"}, "email"),
        ({"email": "x@example.com", "password": "short", "display_name": "X"}, "password"),
        ({"email": "x@example.com", "password": "p" * 1025, "display_name": "X"}, "password"),
        (
            {"email": "x@example.com", "password": "long enough password", "display_name": "  "},
            "display_name",
        ),
        (
            {"email": "x@example.com", "password": "long enough password", "display_name": "d" * 101},
            "display_name",
        ),
    ],
)
async def test_register_rejects_missing_or_invalid_fields(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/auth/register", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_argument"
    assert error["message"].startswith(field)


async def test_login_returns_a_bearer_token_pair(client: httpx.AsyncClient, register: Register) -> None:
    account = await register()

    response = await client.post(
        "/v1/auth/login", json={"email": account.email, "password": account.password}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["access_token"].count(".") == 2
    assert len(body["refresh_token"]) >= 43


async def test_login_accepts_the_email_in_any_case(client: httpx.AsyncClient, register: Register) -> None:
    account = await register()

    response = await client.post(
        "/v1/auth/login", json={"email": account.email.upper(), "password": account.password}
    )

    assert response.status_code == 200


async def test_login_rejects_a_wrong_password_and_an_unknown_email_alike(
    client: httpx.AsyncClient, register: Register, db: asyncpg.Connection
) -> None:
    account = await register()

    wrong = await client.post("/v1/auth/login", json={"email": account.email, "password": "wrong password"})
    unknown = await client.post(
        "/v1/auth/login", json={"email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "whatever1"}
    )

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_credentials"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert await _audit_actions(db, account) == ["user.registered", "login.failed"]


async def test_a_200_byte_password_works_and_every_byte_counts(
    client: httpx.AsyncClient, register: Register
) -> None:
    password = "é" * 100  # 200 bytes in UTF-8: far past bcrypt's 72
    assert len(password.encode()) == 200
    account = await register(password=password)

    good = await client.post("/v1/auth/login", json={"email": account.email, "password": password})
    last_byte_differs = await client.post(
        "/v1/auth/login", json={"email": account.email, "password": password[:-1] + "e"}
    )

    assert good.status_code == 200
    assert last_byte_differs.status_code == 401


async def test_login_locks_the_account_after_consecutive_failures(
    client: httpx.AsyncClient, register: Register, db: asyncpg.Connection
) -> None:
    account = await register()
    wrong = {"email": account.email, "password": "not the password"}

    statuses = [(await client.post("/v1/auth/login", json=wrong)).status_code for _ in range(MAX_FAILURES)]
    locked = await client.post("/v1/auth/login", json={"email": account.email, "password": account.password})

    assert statuses == [401] * (MAX_FAILURES - 1) + [429]
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "account_locked"
    assert 0 < int(locked.headers["retry-after"]) <= 900
    actions = await _audit_actions(db, account)
    assert actions.count("login.failed") == MAX_FAILURES
    assert actions.count("account.locked") == 1


async def test_a_successful_login_resets_the_failure_count(
    client: httpx.AsyncClient, register: Register
) -> None:
    account = await register()
    wrong = {"email": account.email, "password": "not the password"}
    right = {"email": account.email, "password": account.password}

    for _ in range(MAX_FAILURES - 1):
        assert (await client.post("/v1/auth/login", json=wrong)).status_code == 401
    assert (await client.post("/v1/auth/login", json=right)).status_code == 200
    for _ in range(MAX_FAILURES - 1):
        assert (await client.post("/v1/auth/login", json=wrong)).status_code == 401
    assert (await client.post("/v1/auth/login", json=right)).status_code == 200


async def test_a_lockout_ends_after_its_time(migrated: LocalInfra, unique: Callable[[str], str]) -> None:
    settings = Settings(
        environment="test",
        database_url=migrated.database_url,
        redis_url=migrated.redis_url,
        bcrypt_cost=4,
        login_max_failures=1,
        login_lockout_s=1,
    )
    email = f"{unique('lock')}@example.com"
    async with asgi_client(create_app(settings)) as client:
        body = {"email": email, "password": "the right one", "display_name": "L"}
        assert (await client.post("/v1/auth/register", json=body)).status_code == 201
        failed = await client.post("/v1/auth/login", json={"email": email, "password": "the wrong one"})
        assert failed.status_code == 429
        await asyncio.sleep(1.2)
        retried = await client.post("/v1/auth/login", json={"email": email, "password": "the right one"})
    assert retried.status_code == 200


async def test_passwords_are_bcrypt_cost_12_by_default(
    migrated: LocalInfra, unique: Callable[[str], str], db: asyncpg.Connection
) -> None:
    settings = Settings(environment="test", database_url=migrated.database_url, redis_url=migrated.redis_url)
    assert settings.bcrypt_cost == 12
    email = f"{unique('cost')}@example.com"
    async with asgi_client(create_app(settings)) as client:
        body = {"email": email, "password": "correct horse battery", "display_name": "C"}
        assert (await client.post("/v1/auth/register", json=body)).status_code == 201

    stored = await db.fetchval("SELECT password_hash FROM users WHERE lower(email) = lower($1)", email)
    assert stored.startswith("$2b$12$")


async def test_login_upgrades_a_hash_made_with_another_cost(
    migrated: LocalInfra, register: Register, db: asyncpg.Connection
) -> None:
    account = await register()  # cost 4, the tests' setting
    settings = Settings(
        environment="test", database_url=migrated.database_url, redis_url=migrated.redis_url, bcrypt_cost=5
    )

    async with asgi_client(create_app(settings)) as client:
        credentials = {"email": account.email, "password": account.password}
        assert (await client.post("/v1/auth/login", json=credentials)).status_code == 200
        assert (await client.post("/v1/auth/login", json=credentials)).status_code == 200

    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(account.user_id))
    assert stored.startswith("$2b$05$")
