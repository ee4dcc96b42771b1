"""Run the stand-in: in-process for tests (``run_standin``), or as a process (``python -m``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn

from coca_llm_standin.app import StandinConfig, create_app, quiet_simulated_crashes


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def run_standin(
    port: int = 0, *, host: str = "127.0.0.1", token_delay_ms: float = 0.0
) -> AsyncIterator[str]:
    """Serve the stand-in on the running event loop; yields its OpenAI base URL (``http://host:port/v1``).

    ``port=0`` picks a free port. On exit the server stops; streams still open are cut after 1 s.
    """
    quiet_simulated_crashes()
    config = uvicorn.Config(
        create_app(StandinConfig(token_delay_ms=token_delay_ms)),
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the LLM stand-in stopped during startup")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        await task
