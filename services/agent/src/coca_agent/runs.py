"""Executing a run: the LLM and tool loop, its events, and its all-or-nothing result.

Before a run starts, the user message and the run row (``running``) are already committed. At the
end, the run's messages (tool calls, tool results, the reply) and its completion are written in one
transaction, and ``message.completed`` / ``run.completed`` are emitted only after that commit and
after Kafka acknowledged every earlier event of the run. A failed run writes no message: the run
row records the reason and ``run.failed`` carries it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from asyncpg.exceptions import PostgresError
from coca_platform.db import Pool
from coca_platform.errors import CocaError, Conflict, NotFound, Unavailable
from coca_platform.observability import tracer
from prometheus_client import Counter, Histogram

from coca_agent.events import EventsUnavailable, RunEvents, message_payload
from coca_agent.llm import LlmClient
from coca_agent.memory_client import MemoryClient, RetrievedChunk, format_context, sources_payload
from coca_agent.metering import Metering
from coca_agent.models import Message, NewMessage, Role, RunRequest, RunStatus, Usage
from coca_agent.registry import RunOutcome
from coca_agent.repository import ConversationRepository, UsageRepository
from coca_agent.tools import ToolInvoker

log = logging.getLogger(__name__)

RUNS = Counter("coca_agent_runs_total", "Agent runs that ended, by outcome", ["outcome"])
RUN_DURATION = Histogram(
    "coca_agent_run_duration_seconds",
    "Agent run duration, from start to its last event",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)


class TooManyToolSteps(CocaError):
    """The model kept asking for tools past ``MAX_TOOL_STEPS``: the upstream misbehaved (502)."""

    code = "too_many_tool_steps"
    http_status = 502


@dataclass(frozen=True, slots=True)
class RunLimits:
    default_model: str
    max_tool_steps: int
    retrieval_top_k: int = 5


@dataclass(slots=True)
class _Progress:
    usage: Usage = field(default_factory=Usage)
    sources: list[dict[str, Any]] = field(default_factory=list)


class RunExecutor:
    def __init__(
        self,
        pool: Pool,
        llm: LlmClient,
        tools: ToolInvoker,
        metering: Metering,
        limits: RunLimits,
        memory: MemoryClient | None = None,
    ) -> None:
        self._pool, self._llm, self._tools, self._limits = pool, llm, tools, limits
        self._metering, self._memory = metering, memory

    async def execute(self, request: RunRequest, events: RunEvents) -> RunOutcome:
        run = request.run
        attributes = {
            "coca.run_id": str(run.id),
            "coca.conversation_id": str(run.conversation_id),
            "coca.tenant_id": str(run.tenant_id),
        }
        with tracer.start_as_current_span("agent run", attributes=attributes):
            started = time.perf_counter()
            progress = _Progress()
            try:
                await events.emit(
                    "run.started",
                    {"message_id": str(request.user_message.id), "agent_id": str(request.agent.id)},
                )
                reply, produced = await self._converse(request, events, progress)
                await events.confirm()  # every delta and tool event is in Kafka before the reply commits
                message = await self._complete(request, produced, reply, progress.usage)
            except CocaError as exc:
                await self._fail(request, events, exc, progress.usage, started)
                return RunOutcome(error=exc)
            except asyncio.CancelledError:
                cancelled = Unavailable(
                    "the run was cancelled: the service is shutting down", code="cancelled"
                )
                await self._fail(request, events, cancelled, progress.usage, started)
                raise
            except Exception:  # a bug: recorded as a failed run, logged once here with its traceback
                log.exception("run crashed", extra={"data": {"run_id": str(run.id)}})
                internal = CocaError("internal error")
                await self._fail(request, events, internal, progress.usage, started)
                return RunOutcome(error=internal)
            await self._meter(request, progress.usage)
            try:  # committed: from here on the run has completed, whatever happens to its last events
                completed: dict[str, Any] = {"message": message_payload(message)}
                if progress.sources:
                    completed["sources"] = progress.sources
                await events.emit("message.completed", completed)
                await events.emit("run.completed", {"usage": progress.usage.as_dict()})
                await events.confirm()
            except EventsUnavailable as exc:  # the reply is durable in PostgreSQL
                log.warning(
                    "run completion events not delivered",
                    extra={"data": {"run_id": str(run.id), "error": exc.message}},
                )
            RUNS.labels("completed").inc()
            RUN_DURATION.observe(time.perf_counter() - started)
            log.info("run completed", extra={"data": _log_data(request, progress.usage, started)})
            return RunOutcome(message=message)

    async def _converse(
        self, request: RunRequest, events: RunEvents, progress: _Progress
    ) -> tuple[str, list[NewMessage]]:
        """Call the LLM (and tools) until it answers; returns the reply and the tool messages before it."""
        agent, tenant_id = request.agent, request.run.tenant_id
        chunks = await self._retrieve(request)
        progress.sources = sources_payload(chunks)
        system_prompt = (agent.system_prompt or "") + format_context(chunks)
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages += [m.to_openai() for m in request.history]
        messages.append(request.user_message.to_openai())
        tools = await self._tools.definitions(tenant_id, agent.tools) if agent.tools else []
        model = agent.model or self._limits.default_model
        produced: list[NewMessage] = []
        for step in range(self._limits.max_tool_steps + 1):
            stream = self._llm.stream(model, messages, tools)
            parts: list[str] = []
            async with aclosing(stream.deltas()) as deltas:
                async for text in deltas:
                    parts.append(text)
                    await events.emit("message.delta", {"text": text})
            progress.usage += stream.usage_or_estimate()
            calls = stream.tool_calls
            if not calls:
                return "".join(parts), produced
            if step == self._limits.max_tool_steps:
                raise TooManyToolSteps(
                    f"the model asked for tools more than {self._limits.max_tool_steps} times in one run"
                )
            asked = NewMessage(Role.ASSISTANT, "".join(parts), tuple(calls))
            produced.append(asked)
            messages.append(asked.to_openai())
            for call in calls:
                await events.emit(
                    "tool.call", {"id": call.id, "name": call.name, "arguments": call.arguments}
                )
                result = await self._tools.invoke(tenant_id, agent.tools, call)
                await events.emit(
                    "tool.result",
                    {
                        "id": call.id,
                        "name": call.name,
                        "content": result.content,
                        "is_error": result.is_error,
                    },
                )
                answer = NewMessage(Role.TOOL, result.content, tool_call_id=call.id)
                produced.append(answer)
                messages.append(answer.to_openai())
        raise AssertionError("unreachable: the loop returns or raises")

    async def _retrieve(self, request: RunRequest) -> list[RetrievedChunk]:
        """The knowledge-base chunks for the question (none when the agent has no knowledge bases). A
        memory service that is down or a knowledge base that is gone degrades the answer, not the run."""
        agent = request.agent
        if self._memory is None or not agent.knowledge_base_ids:
            return []
        try:
            return await self._memory.retrieve(
                request.run.tenant_id,
                request.user_message.content,
                [str(kb) for kb in agent.knowledge_base_ids],
                self._limits.retrieval_top_k,
            )
        except (Unavailable, NotFound) as exc:
            log.warning(
                "retrieval skipped", extra={"data": {"run_id": str(request.run.id), "error": exc.code}}
            )
            return []

    async def _meter(self, request: RunRequest, usage: Usage) -> None:
        """Publish the ended run's usage record. If Kafka does not acknowledge it, the run stays marked
        unpublished and the usage sweeper publishes it later (same event id: billing counts it once)."""
        run, agent = request.run, request.agent
        model = agent.model or self._limits.default_model
        try:
            await self._metering.record(run.tenant_id, request.caller.user_id, agent.id, run.id, model, usage)
            async with self._pool.acquire() as conn:
                await UsageRepository(conn).mark_published(run.tenant_id, run.id)
        except (CocaError, PostgresError, OSError) as exc:
            log.warning("usage record deferred", extra={"data": {"run_id": str(run.id), "error": str(exc)}})

    async def _complete(
        self, request: RunRequest, produced: list[NewMessage], reply: str, usage: Usage
    ) -> Message:
        run = request.run
        async with self._pool.acquire() as conn, conn.transaction():
            repo = ConversationRepository(conn)
            for message in produced:
                await repo.insert_message(run.tenant_id, run.conversation_id, run.id, message)
            final = await repo.insert_message(
                run.tenant_id, run.conversation_id, run.id, NewMessage(Role.ASSISTANT, reply)
            )
            if not await repo.finish_run(run.tenant_id, run.id, RunStatus.COMPLETED, usage):
                raise Conflict(f"run {str(run.id)!r} had already ended")
        return final

    async def _fail(
        self, request: RunRequest, events: RunEvents, exc: CocaError, usage: Usage, started: float
    ) -> None:
        run = request.run
        error = {"code": exc.code, "message": exc.message}
        try:
            async with self._pool.acquire() as conn:
                still_running = await ConversationRepository(conn).finish_run(
                    run.tenant_id, run.id, RunStatus.FAILED, usage, error
                )
        except (PostgresError, OSError) as db_exc:  # the event still tells the clients
            still_running = True
            log.error(
                "run failure not recorded", extra={"data": {"run_id": str(run.id), "error": str(db_exc)}}
            )
        if usage.prompt_tokens or usage.completion_tokens:  # the LLM did work: metered, settling the quota
            await self._meter(request, usage)
        else:
            await self._metering.release(run.id)
        if not still_running:  # its completion committed just before the failure: it did not fail
            log.warning("run ended before its failure was recorded", extra={"data": {"run_id": str(run.id)}})
            return
        try:
            await events.emit("run.failed", {"error": error})
            await events.confirm()
        except EventsUnavailable as ev_exc:
            log.warning(
                "run failure event not delivered",
                extra={"data": {"run_id": str(run.id), "error": ev_exc.message}},
            )
        RUNS.labels("failed").inc()
        RUN_DURATION.observe(time.perf_counter() - started)
        log.info("run failed", extra={"data": {**_log_data(request, usage, started), "error": exc.code}})


def _log_data(request: RunRequest, usage: Usage, started: float) -> dict[str, Any]:
    return {
        "run_id": str(request.run.id),
        "conversation_id": str(request.run.conversation_id),
        "tokens": usage.as_dict(),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
