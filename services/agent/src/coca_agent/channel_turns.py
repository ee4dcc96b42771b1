"""Agent turns for chat channels: a channel message runs like a user's message in a conversation.

Each channel thread (``thread_key``, from :mod:`coca_agent.channel_worker`) continues one conversation
of the channel's agent, owned by the agent's owner. The turn runs like any other (quota, events,
persistence, metering) and its final reply text goes back to the channel.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from coca_platform.errors import InvalidArgument, NotFound

from coca_agent.models import Caller
from coca_agent.repository import AgentRepository, ThreadRepository
from coca_agent.resources import Resources


class ChannelTurns:
    def __init__(self, resources: Resources) -> None:
        self._res = resources

    async def run_turn(self, tenant_id: str, agent_id: str, thread_key: str, text: str) -> str:
        """The channel worker's ``run_turn``: the agent's reply to ``text`` in the thread's conversation."""
        try:
            tenant, agent_uuid = UUID(tenant_id), UUID(agent_id)
        except ValueError as exc:
            raise InvalidArgument("channel message names a malformed tenant or agent id") from exc
        async with self._res.pool.acquire() as conn:
            agent = await AgentRepository(conn).get(tenant, agent_uuid)
            if agent is None:
                raise NotFound(f"agent {agent_id!r} not found")
            caller = Caller(tenant_id=tenant, user_id=agent.user_id, role="member")
            conversation_id = await ThreadRepository(conn).conversation(tenant, thread_key, agent.id)
        async with self._res.conversations() as conversations:
            if conversation_id is None:
                created = await conversations.create(caller, agent.id, title=thread_key[:200])
                conversation_id = created.id
                async with self._res.pool.acquire() as conn:
                    await ThreadRepository(conn).bind(tenant, thread_key, conversation_id)
            handle = await conversations.post_message(caller, conversation_id, text, listen=False)
        outcome = await asyncio.shield(handle.task)
        if outcome.error is not None:
            raise outcome.error
        return outcome.message.content if outcome.message is not None else ""
