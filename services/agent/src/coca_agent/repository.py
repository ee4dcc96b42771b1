"""asyncpg SQL → domain types. Every statement filters by tenant_id; None/False means "not there"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from coca_agent.models import (
    Agent,
    Conversation,
    Message,
    NewMessage,
    Role,
    Run,
    RunStatus,
    ToolCall,
    Usage,
)

_INSERT_AGENT = """
INSERT INTO agents (tenant_id, user_id, name, system_prompt, model, tools, knowledge_base_ids)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, tenant_id, user_id, name, system_prompt, model, tools, knowledge_base_ids,
    created_at, updated_at
"""
_GET_AGENT = """
SELECT id, tenant_id, user_id, name, system_prompt, model, tools, knowledge_base_ids, created_at, updated_at
FROM agents WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
"""
_LIST_AGENTS = """
SELECT id, tenant_id, user_id, name, system_prompt, model, tools, knowledge_base_ids, created_at, updated_at
FROM agents WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id LIMIT $2
"""
# Fields given as NULL keep their value; `model` has a flag because NULL is a value it can take.
_UPDATE_AGENT = """
UPDATE agents SET name = COALESCE($3, name), system_prompt = COALESCE($4, system_prompt),
    model = CASE WHEN $5 THEN $6 ELSE model END, tools = COALESCE($7, tools),
    knowledge_base_ids = COALESCE($8, knowledge_base_ids), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
RETURNING id, tenant_id, user_id, name, system_prompt, model, tools, knowledge_base_ids,
    created_at, updated_at
"""
_DELETE_AGENT = """
UPDATE agents SET deleted_at = now() WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING id
"""

_INSERT_CONVERSATION = """
INSERT INTO conversations (tenant_id, user_id, agent_id, title) VALUES ($1, $2, $3, $4)
RETURNING id, tenant_id, user_id, agent_id, title, created_at
"""
# $3 is the caller's user id, or NULL for callers who may see every conversation of the tenant.
_GET_CONVERSATION = """
SELECT id, tenant_id, user_id, agent_id, title, created_at FROM conversations
WHERE tenant_id = $1 AND id = $2 AND ($3::uuid IS NULL OR user_id = $3)
"""

_RECENT_MESSAGES = """
SELECT id, conversation_id, run_id, role, content, tool_calls, tool_call_id, created_at FROM (
    SELECT seq, id, conversation_id, run_id, role, content, tool_calls, tool_call_id, created_at
    FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY seq DESC LIMIT $3
) recent ORDER BY seq
"""
_INSERT_MESSAGE = """
INSERT INTO messages (tenant_id, conversation_id, run_id, role, content, tool_calls, tool_call_id)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
RETURNING id, conversation_id, run_id, role, content, tool_calls, tool_call_id, created_at
"""

_INSERT_RUN = """
INSERT INTO runs (tenant_id, conversation_id, status) VALUES ($1, $2, 'running')
RETURNING id, tenant_id, conversation_id, status, started_at
"""
_FINISH_RUN = """
UPDATE runs SET status = $3, error = $4::jsonb, prompt_tokens = $5, completion_tokens = $6,
    finished_at = now()
WHERE tenant_id = $1 AND id = $2 AND status = 'running' RETURNING id
"""
_THREAD_CONVERSATION = """
SELECT t.conversation_id FROM channel_threads t JOIN conversations c ON c.id = t.conversation_id
WHERE t.tenant_id = $1 AND t.thread_key = $2 AND c.agent_id = $3
"""
_BIND_THREAD = """
INSERT INTO channel_threads (tenant_id, thread_key, conversation_id) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, thread_key) DO UPDATE SET conversation_id = EXCLUDED.conversation_id
"""
_MARK_USAGE_PUBLISHED = "UPDATE runs SET usage_published_at = now() WHERE tenant_id = $1 AND id = $2"
# Ended runs whose usage record Kafka never acknowledged (the process died, or Kafka was down).
_UNPUBLISHED_USAGE = """
SELECT r.id AS run_id, r.tenant_id, c.user_id, c.agent_id, a.model, r.prompt_tokens, r.completion_tokens
FROM runs r JOIN conversations c ON c.id = r.conversation_id JOIN agents a ON a.id = c.agent_id
WHERE r.finished_at IS NOT NULL AND r.usage_published_at IS NULL AND r.finished_at < now() - $1::interval
    AND r.prompt_tokens + r.completion_tokens > 0
ORDER BY r.finished_at LIMIT $2
"""


def _agent(row: asyncpg.Record) -> Agent:
    return Agent(**dict(row))


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(**dict(row))


def _message(row: asyncpg.Record) -> Message:
    calls = orjson.loads(row["tool_calls"]) if row["tool_calls"] else []
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        run_id=row["run_id"],
        role=Role(row["role"]),
        content=row["content"],
        tool_calls=[ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls],
        tool_call_id=row["tool_call_id"],
        created_at=row["created_at"],
    )


class AgentRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, tenant_id: UUID, user_id: UUID, fields: dict[str, Any]) -> Agent:
        row = await self._conn.fetchrow(
            _INSERT_AGENT,
            tenant_id,
            user_id,
            fields["name"],
            fields["system_prompt"],
            fields["model"],
            fields["tools"],
            fields["knowledge_base_ids"],
        )
        return _agent(row)

    async def get(self, tenant_id: UUID, agent_id: UUID) -> Agent | None:
        row = await self._conn.fetchrow(_GET_AGENT, tenant_id, agent_id)
        return _agent(row) if row else None

    async def list(self, tenant_id: UUID, limit: int) -> list[Agent]:
        return [_agent(r) for r in await self._conn.fetch(_LIST_AGENTS, tenant_id, limit)]

    async def update(self, tenant_id: UUID, agent_id: UUID, changes: dict[str, Any]) -> Agent | None:
        row = await self._conn.fetchrow(
            _UPDATE_AGENT,
            tenant_id,
            agent_id,
            changes.get("name"),
            changes.get("system_prompt"),
            "model" in changes,
            changes.get("model"),
            changes.get("tools"),
            changes.get("knowledge_base_ids"),
        )
        return _agent(row) if row else None

    async def delete(self, tenant_id: UUID, agent_id: UUID) -> bool:
        return await self._conn.fetchval(_DELETE_AGENT, tenant_id, agent_id) is not None


class ConversationRepository:
    """Conversations, their messages and their runs."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, tenant_id: UUID, user_id: UUID, agent_id: UUID, title: str | None) -> Conversation:
        return _conversation(
            await self._conn.fetchrow(_INSERT_CONVERSATION, tenant_id, user_id, agent_id, title)
        )

    async def get(self, tenant_id: UUID, conversation_id: UUID, user_id: UUID | None) -> Conversation | None:
        row = await self._conn.fetchrow(_GET_CONVERSATION, tenant_id, conversation_id, user_id)
        return _conversation(row) if row else None

    async def recent_messages(self, tenant_id: UUID, conversation_id: UUID, limit: int) -> list[Message]:
        rows = await self._conn.fetch(_RECENT_MESSAGES, tenant_id, conversation_id, limit)
        return [_message(r) for r in rows]

    async def insert_message(
        self, tenant_id: UUID, conversation_id: UUID, run_id: UUID, message: NewMessage
    ) -> Message:
        calls = (
            orjson.dumps([c.to_openai() for c in message.tool_calls]).decode() if message.tool_calls else None
        )
        row = await self._conn.fetchrow(
            _INSERT_MESSAGE,
            tenant_id,
            conversation_id,
            run_id,
            message.role.value,
            message.content,
            calls,
            message.tool_call_id,
        )
        return _message(row)

    async def insert_run(self, tenant_id: UUID, conversation_id: UUID) -> Run:
        row = await self._conn.fetchrow(_INSERT_RUN, tenant_id, conversation_id)
        return Run(**{**dict(row), "status": RunStatus(row["status"])})

    async def finish_run(
        self,
        tenant_id: UUID,
        run_id: UUID,
        status: RunStatus,
        usage: Usage,
        error: dict[str, str] | None = None,
    ) -> bool:
        """Record the end of a run that is still running; False if it had already ended."""
        found = await self._conn.fetchval(
            _FINISH_RUN,
            tenant_id,
            run_id,
            status.value,
            orjson.dumps(error).decode() if error else None,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        return found is not None


class UsageRepository:
    """Which ended runs still owe billing their usage record."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def mark_published(self, tenant_id: UUID, run_id: UUID) -> None:
        await self._conn.execute(_MARK_USAGE_PUBLISHED, tenant_id, run_id)

    async def unpublished(self, older_than: timedelta, limit: int) -> list[asyncpg.Record]:
        return list(await self._conn.fetch(_UNPUBLISHED_USAGE, older_than, limit))


class ThreadRepository:
    """Which conversation a chat channel's thread continues."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def conversation(self, tenant_id: UUID, thread_key: str, agent_id: UUID) -> UUID | None:
        found: UUID | None = await self._conn.fetchval(_THREAD_CONVERSATION, tenant_id, thread_key, agent_id)
        return found

    async def bind(self, tenant_id: UUID, thread_key: str, conversation_id: UUID) -> None:
        await self._conn.execute(_BIND_THREAD, tenant_id, thread_key, conversation_id)
