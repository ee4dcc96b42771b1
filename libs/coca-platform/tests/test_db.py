"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import asyncpg
import pytest
from coca_platform.db import migrate
from coca_platform.localinfra import LocalInfra


def _make_package(tmp_path: Path, name: str, files: dict[str, str]) -> str:
    pkg = tmp_path / name
    (pkg / "migrations").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for fname, sql in files.items():
        (pkg / "migrations" / fname).write_text(sql)
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop(name, None)
    return name


async def test_migrate_applies_once_and_refuses_edited_migration(
    infra: LocalInfra, tmp_path: Path, unique: types.FunctionType
) -> None:
    schema = unique("s").replace("-", "_")
    package = _make_package(
        tmp_path,
        schema + "_pkg",
        {
            "0001_create.sql": "CREATE TABLE things (id int PRIMARY KEY);",
            "0002_add.sql": "ALTER TABLE things ADD COLUMN name text;",
        },
    )
    conn = await asyncpg.connect(infra.database_url)
    try:
        assert await migrate(conn, schema=schema, package=package) == ["0001_create.sql", "0002_add.sql"]
        assert await migrate(conn, schema=schema, package=package) == []
        cols = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'things'",
            schema,
        )
        assert {r["column_name"] for r in cols} == {"id", "name"}
        (tmp_path / package / "migrations" / "0001_create.sql").write_text("CREATE TABLE other (id int);")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await migrate(conn, schema=schema, package=package)
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_applied(
    infra: LocalInfra, tmp_path: Path, unique: types.FunctionType
) -> None:
    schema = unique("s").replace("-", "_")
    package = _make_package(
        tmp_path,
        schema + "_pkg",
        {
            "0001_ok.sql": "CREATE TABLE a (id int);",
            "0002_broken.sql": "CREATE TABLE b (id nonexistent_type);",
        },
    )
    conn = await asyncpg.connect(infra.database_url)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, schema=schema, package=package)
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.a") is None
    finally:
        await conn.close()
