"""The runs executing in this process: bounded, owned by the app, cancelled on shutdown.

A run is decoupled from the request that started it: the request relays its events (or waits for
its outcome), and a client that goes away leaves the run to finish and persist its reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from coca_platform.errors import CocaError, Unavailable

from coca_agent.events import Frame
from coca_agent.models import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    message: Message | None = None  # the persisted reply of a completed run
    error: CocaError | None = None  # why a run failed


@dataclass(frozen=True, slots=True)
class RunHandle:
    run_id: UUID
    conversation_id: UUID
    frames: asyncio.Queue[Frame] | None  # the run's SSE frames, for the request that listens
    task: asyncio.Task[RunOutcome]


class RunSlot:
    """Capacity for one run, taken before anything is written; ``start`` it or ``release`` it."""

    def __init__(self, registry: RunRegistry) -> None:
        self._registry = registry
        self._used = False

    def start(self, run: Coroutine[Any, Any, RunOutcome]) -> asyncio.Task[RunOutcome]:
        self._used = True
        return self._registry._start(run)

    def release(self) -> None:
        if not self._used:
            self._used = True
            self._registry._reserved -= 1


class RunRegistry:
    def __init__(self, max_concurrent: int) -> None:
        self._max = max_concurrent
        self._reserved = 0
        self._tasks: set[asyncio.Task[RunOutcome]] = set()
        self._closing = False

    @property
    def active(self) -> int:
        return len(self._tasks)

    def reserve(self) -> RunSlot:
        if self._closing:
            raise Unavailable("the agent service is shutting down", code="shutting_down")
        if self._reserved >= self._max:
            raise Unavailable(
                f"too many runs in progress (limit {self._max}); retry shortly", code="at_capacity"
            )
        self._reserved += 1
        return RunSlot(self)

    def _start(self, run: Coroutine[Any, Any, RunOutcome]) -> asyncio.Task[RunOutcome]:
        task = asyncio.get_running_loop().create_task(run)  # inherits the request's trace context
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        if self._closing:  # reserved before shutdown began: it records itself cancelled
            task.cancel()
        return task

    def _finished(self, task: asyncio.Task[RunOutcome]) -> None:
        self._tasks.discard(task)
        self._reserved -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("run task crashed", exc_info=task.exception())

    async def close(self, grace_s: float) -> None:
        """Refuse new runs, cancel the running ones (and those still being started) and give them
        ``grace_s`` to record that."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._reserved and loop.time() < deadline:
            for task in self._tasks:
                if not task.cancelling():  # once: a second cancel would cut its failure record short
                    task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - loop.time()))
            else:  # a request is between reserving and starting its run
                await asyncio.sleep(0.01)
        if self._reserved:
            log.warning("runs still finishing at shutdown", extra={"data": {"count": self._reserved}})
