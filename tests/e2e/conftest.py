"""The whole suite as processes: infrastructure, LLM stand-in and the nine services on free ports."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from coca_platform.devstack import SERVICES, Stack, run_stack
from coca_platform.localinfra import free_port


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    data_dir = Path(tempfile.mkdtemp(prefix="coca-e2e-"))
    ports = {name: free_port() for name in SERVICES}
    with run_stack(
        data_dir,
        ports=ports,
        database=f"coca_e2e_{uuid.uuid4().hex[:12]}",
        fresh_database=True,
        drop_database_on_exit=True,
        extra_env={"ENVIRONMENT": "test", "BCRYPT_COST": "12", "STANDIN_TOKEN_DELAY_MS": "2"},
    ) as started:
        yield started


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        yield client
