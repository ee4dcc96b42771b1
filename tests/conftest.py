"""The whole suite as processes, shared by the end-to-end and browser tests: infrastructure, the LLM
stand-in and the nine services on free ports, started once per test session.

Outbound calls to user-supplied URLs are refused for private and loopback addresses; the tests'
receivers (webhooks, tools) listen on this machine, so the stack allow-lists the host name
``localhost`` only — URLs with ``127.0.0.1`` or ``169.254.169.254`` stay refused, as in production.
"""

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
        private_vhost=True,
        extra_env={
            "ENVIRONMENT": "test",
            "STANDIN_TOKEN_DELAY_MS": "2",
            "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
            "CORS_ORIGINS": f"http://127.0.0.1:{ports['web']}",
            "EGRESS_ALLOWED_HOSTS": "localhost",
            # every test signs up its own users from this one address
            "RATE_LIMIT_AUTH_IP_PER_MIN": "1000",
            # replies to an unreachable webhook dead-letter quickly in the tests
            "OUTBOUND_MAX_ATTEMPTS": "3",
            "OUTBOUND_BACKOFF_S": "[0.2]",
        },
    ) as started:
        yield started


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as client:
        yield client
