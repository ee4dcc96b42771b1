"""Use-cases: agents, conversations, and posting a message (which starts a run).

Transaction boundaries live here. Access rules: everything is scoped to the caller's tenant; a
conversation is visible to the user who started it and to the tenant's admins and owners; an
agent is visible to the whole tenant and changed only by its owner or an admin/owner. Anything
out of reach is ``NotFound``, never a hint that it exists.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from coca_platform.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from coca_platform.eventlog import EventLog

from coca_agent.events import EventPublisher, Frame
from coca_agent.metering import Metering
from coca_agent.models import Agent, Caller, Conversation, Message, NewMessage, Role, RunRequest
from coca_agent.registry import RunHandle, RunRegistry
from coca_agent.repository import AgentRepository, ConversationRepository
from coca_agent.runs import RunExecutor

AGENT_LIST_LIMIT = 500


class AgentService:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._agents = AgentRepository(conn)

    async def create(self, caller: Caller, fields: dict[str, Any]) -> Agent:
        return await self._agents.insert(caller.tenant_id, caller.user_id, fields)

    async def get(self, caller: Caller, agent_id: UUID) -> Agent:
        agent = await self._agents.get(caller.tenant_id, agent_id)
        if agent is None:
            raise NotFound(f"agent {str(agent_id)!r} not found")
        return agent

    async def list(self, caller: Caller) -> list[Agent]:
        return await self._agents.list(caller.tenant_id, AGENT_LIST_LIMIT)

    async def update(self, caller: Caller, agent_id: UUID, changes: dict[str, Any]) -> Agent:
        _check_may_change(caller, await self.get(caller, agent_id))
        agent = await self._agents.update(caller.tenant_id, agent_id, changes)
        if agent is None:  # deleted meanwhile
            raise NotFound(f"agent {str(agent_id)!r} not found")
        return agent

    async def delete(self, caller: Caller, agent_id: UUID) -> None:
        _check_may_change(caller, await self.get(caller, agent_id))
        if not await self._agents.delete(caller.tenant_id, agent_id):
            raise NotFound(f"agent {str(agent_id)!r} not found")


def _check_may_change(caller: Caller, agent: Agent) -> None:
    if agent.user_id != caller.user_id and caller.role not in ("owner", "admin"):
        raise PermissionDenied("only the agent's owner or a tenant admin may change it")


@dataclass(frozen=True, slots=True)
class ChatLimits:
    max_message_chars: int
    history_messages: int


class ConversationService:
    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        log: EventLog,
        publisher: EventPublisher,
        registry: RunRegistry,
        executor: RunExecutor,
        metering: Metering,
        limits: ChatLimits,
    ) -> None:
        self._conn = conn
        self._agents = AgentRepository(conn)
        self._conversations = ConversationRepository(conn)
        self._log, self._publisher, self._registry, self._executor = log, publisher, registry, executor
        self._limits = limits
        self._metering = metering

    async def create(self, caller: Caller, agent_id: UUID, title: str | None) -> Conversation:
        if await self._agents.get(caller.tenant_id, agent_id) is None:
            raise NotFound(f"agent {str(agent_id)!r} not found")
        conversation = await self._conversations.insert(caller.tenant_id, caller.user_id, agent_id, title)
        # The event log answers replay and WebSocket subscriptions for this tenant only.
        await self._log.set_owner(str(conversation.id), str(caller.tenant_id))
        return conversation

    async def get(self, caller: Caller, conversation_id: UUID) -> Conversation:
        owner = None if caller.sees_all_conversations else caller.user_id
        conversation = await self._conversations.get(caller.tenant_id, conversation_id, owner)
        if conversation is None:
            raise NotFound(f"conversation {str(conversation_id)!r} not found")
        return conversation

    async def messages(self, caller: Caller, conversation_id: UUID, limit: int) -> list[Message]:
        conversation = await self.get(caller, conversation_id)
        return await self._conversations.recent_messages(caller.tenant_id, conversation.id, limit)

    async def post_message(
        self, caller: Caller, conversation_id: UUID, content: str, *, listen: bool
    ) -> RunHandle:
        """Reserve quota, write the user message and a running run in one transaction, then start the run.

        Nothing is written when the content is invalid, the tenant is over quota or the service is at
        capacity."""
        _check_content(content, self._limits.max_message_chars)
        slot = self._registry.reserve()
        try:
            async with self._conn.transaction():
                conversation = await self.get(caller, conversation_id)
                agent = await self._agents.get(caller.tenant_id, conversation.agent_id)
                if agent is None:
                    raise Conflict("this conversation's agent was deleted")
                history = _from_first_user(
                    await self._conversations.recent_messages(
                        caller.tenant_id, conversation.id, self._limits.history_messages
                    )
                )
                run = await self._conversations.insert_run(caller.tenant_id, conversation.id)
                # Over quota: 402 before anything is kept or any LLM call (the transaction rolls back).
                context_chars = len(content) + sum(len(m.content) for m in history)
                await self._metering.reserve(caller.tenant_id, run.id, self._metering.estimate(context_chars))
                user_message = await self._conversations.insert_message(
                    caller.tenant_id, conversation.id, run.id, NewMessage(Role.USER, content)
                )
            # Keep the event log's owner record alive as long as the conversation is used.
            await self._log.set_owner(str(conversation.id), str(caller.tenant_id))
        except BaseException:
            slot.release()
            raise
        frames: asyncio.Queue[Frame] | None = asyncio.Queue() if listen else None
        events = self._publisher.for_run(caller.tenant_id, conversation.id, run.id, frames)
        request = RunRequest(run=run, caller=caller, agent=agent, user_message=user_message, history=history)
        task = slot.start(self._executor.execute(request, events))
        return RunHandle(run.id, conversation.id, frames, task)


def _check_content(content: str, max_chars: int) -> None:
    if not content.strip():
        raise InvalidArgument("content: must not be empty")
    if len(content) > max_chars:
        raise InvalidArgument(f"content: longer than {max_chars} characters")
    if "\x00" in content:
        raise InvalidArgument("content: must not contain NUL characters")


def _from_first_user(history: list[Message]) -> list[Message]:
    """Drop leading tool traffic cut off by the history window (a tool result needs its call)."""
    for i, message in enumerate(history):
        if message.role == Role.USER:
            return history[i:]
    return []
