"""PostgreSQL: an asyncpg pool per service schema, and forward-only SQL migrations.

Each service owns one schema (``coca_<svc>``), set as the pool's ``search_path``. Migrations are
``migrations/NNNN_description.sql`` files shipped in the service package, applied by ``migrate()``
in one transaction under an advisory lock; an applied migration whose file changed is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Protocol

import asyncpg
from prometheus_client import Gauge

from coca_platform.errors import Unavailable

log = logging.getLogger(__name__)

POOL_IN_USE = Gauge(
    "coca_db_pool_connections_in_use", "PostgreSQL connections checked out of the pool", ["schema"]
)
POOL_MAX = Gauge("coca_db_pool_connections_max", "PostgreSQL pool size limit", ["schema"])

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class Pool(Protocol):
    """What services need of a pool: a real asyncpg pool, or the tests' one-connection pool."""

    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


def _check_schema(schema: str) -> str:
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


@asynccontextmanager
async def create_pool(
    dsn: str, *, schema: str, application_name: str, min_size: int = 1, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections use ``schema``; closed on exit."""
    _check_schema(schema)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings={"search_path": schema, "application_name": application_name},
            command_timeout=30,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    # Read at scrape time: the DbPoolSaturated alert compares the two.
    POOL_MAX.labels(schema).set(max_size)
    POOL_IN_USE.labels(schema).set_function(lambda: pool.get_size() - pool.get_idle_size())
    try:
        yield pool
    finally:
        POOL_IN_USE.labels(schema).set_function(lambda: 0)
        await pool.close()


async def ping(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` from ``<package>/migrations/*.sql``, in order."""
    found = []
    folder = resources.files(package) / "migrations"
    for entry in folder.iterdir():
        match = _MIGRATION_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}.migrations")
    return found


async def migrate(conn: asyncpg.Connection, *, schema: str, package: str) -> list[str]:
    """Apply pending migrations of ``package`` to ``schema``; returns the names applied."""
    _check_schema(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        # One migrator per schema at a time, across replicas and Jobs.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"coca-migrate:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        for version, name, sql in load_migrations(package):
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version]["checksum"] != checksum:
                    raise RuntimeError(
                        f"migration {name!r} was changed after it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                version,
                name,
                checksum,
            )
            applied_now.append(name)
    if applied_now:
        log.info("migrations applied", extra={"data": {"schema": schema, "applied": applied_now}})
    return applied_now


async def migrate_dsn(dsn: str, *, schema: str, package: str) -> list[str]:
    """``python -m coca_<svc> migrate``: connect, migrate, close."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, schema=schema, package=package)
    finally:
        await conn.close()
