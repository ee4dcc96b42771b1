"""Starting the service: migrations from the command line, and the signing key's configuration."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import jwt
import pytest
from coca_platform.localinfra import LocalInfra
from coca_platform.settings import Environment
from coca_platform.testing import asgi_client
from coca_user.app import create_app
from coca_user.settings import Settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coca_user", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _log_data(stdout: str, message: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        entry = json.loads(line)
        if entry["message"] == message:
            data: dict[str, Any] = entry["data"]
            return data
    raise AssertionError(f"no {message!r} log line in {stdout!r}")


@pytest.fixture
def empty_database(infra: LocalInfra) -> Iterator[str]:
    name = f"coca_user_migrate_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(infra.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield infra.admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrate_command_creates_the_schema_once(empty_database: str) -> None:
    env = {"DATABASE_URL": empty_database, "ENVIRONMENT": "test", "LOG_LEVEL": "INFO"}

    first = _run_cli("migrate", env=env)
    second = _run_cli("migrate", env=env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert _log_data(first.stdout, "migrate finished") == {
        "schema": "coca_user",
        "applied": ["0001_create_users.sql"],
    }
    assert _log_data(second.stdout, "migrate finished") == {"schema": "coca_user", "applied": []}


def test_serve_refuses_to_start_in_prod_without_a_signing_key() -> None:
    env = {"ENVIRONMENT": "prod", "INTERNAL_SECRET": "a-real-secret-for-this-test", "HTTP_PORT": "1"}
    env_without_key = {k: v for k, v in os.environ.items() if k.upper() != "JWT_PRIVATE_KEY"}

    result = subprocess.run(
        [sys.executable, "-m", "coca_user"],
        env={**env_without_key, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "JWT_PRIVATE_KEY" in result.stderr


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_create_app_refuses_a_missing_key_outside_local_and_test(environment: Environment) -> None:
    settings = Settings(environment=environment, internal_secret=SecretStr("s3cret-for-tests"))

    with pytest.raises(SystemExit, match="JWT_PRIVATE_KEY"):
        create_app(settings)


def test_create_app_refuses_an_unreadable_key() -> None:
    settings = Settings(environment="test", jwt_private_key=SecretStr("-----BEGIN PRIVATE KEY-----\nnope\n"))

    with pytest.raises(SystemExit, match="JWT_PRIVATE_KEY"):
        create_app(settings)


async def test_a_configured_key_signs_tokens_and_is_published(migrated: LocalInfra) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(private_key)
    settings = Settings(
        environment="prod",
        internal_secret=SecretStr("s3cret-for-tests"),
        jwt_private_key=SecretStr(pem),
        database_url=migrated.database_url,
        redis_url=migrated.redis_url,
        bcrypt_cost=4,
    )
    email = f"key-{uuid.uuid4().hex[:12]}@example.com"

    async with asgi_client(create_app(settings)) as client:
        body = {"email": email, "password": "correct horse battery", "display_name": "K"}
        assert (await client.post("/v1/auth/register", json=body)).status_code == 201
        login = await client.post(
            "/v1/auth/login", json={"email": email, "password": "correct horse battery"}
        )
        (jwk,) = (await client.get("/.well-known/jwks.json")).json()["keys"]

    published = RSAAlgorithm.from_jwk(jwk)
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.public_numbers() == private_key.public_key().public_numbers()
    claims = jwt.decode(
        login.json()["access_token"], private_key.public_key(), algorithms=["RS256"], audience="coca"
    )
    assert claims["iss"] == "coca-user"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_tokens_signed_before_a_key_rotation_still_verify(migrated: LocalInfra) -> None:
    old_key, new_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    common: dict[str, Any] = {
        "environment": "test",
        "database_url": migrated.database_url,
        "redis_url": migrated.redis_url,
        "bcrypt_cost": 4,
    }
    email = f"rotate-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": "correct horse battery"}
    async with asgi_client(
        create_app(Settings(**common, jwt_private_key=SecretStr(_pem(old_key))))
    ) as client:
        assert (
            await client.post("/v1/auth/register", json=credentials | {"display_name": "R"})
        ).status_code == 201
        old_token = (await client.post("/v1/auth/login", json=credentials)).json()["access_token"]

    rotated = Settings(
        **common, jwt_private_key=SecretStr(_pem(new_key)), jwt_previous_public_keys=_public_pem(old_key)
    )
    async with asgi_client(create_app(rotated)) as client:
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
        new_token = (await client.post("/v1/auth/login", json=credentials)).json()["access_token"]

    by_kid = {jwk["kid"]: RSAAlgorithm.from_jwk(jwk) for jwk in keys}
    assert len(by_kid) == 2
    for token in (old_token, new_token):
        key = by_kid[jwt.get_unverified_header(token)["kid"]]
        assert jwt.decode(token, key, algorithms=["RS256"], audience="coca")["tid"]  # type: ignore[arg-type]
    assert jwt.get_unverified_header(old_token)["kid"] != jwt.get_unverified_header(new_token)["kid"]


def test_create_app_refuses_unreadable_previous_keys() -> None:
    settings = Settings(environment="test", jwt_previous_public_keys="not a pem")

    with pytest.raises(SystemExit, match="JWT_PREVIOUS_PUBLIC_KEYS"):
        create_app(settings)
