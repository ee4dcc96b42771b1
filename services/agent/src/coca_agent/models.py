"""Domain types of the agent service. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the verified identity, as the domain needs it."""

    tenant_id: UUID
    user_id: UUID
    role: str  # owner | admin | member

    @property
    def sees_all_conversations(self) -> bool:
        return self.role in ("owner", "admin")


@dataclass(frozen=True, slots=True)
class Agent:
    id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    system_prompt: str
    model: str | None
    tools: list[str]
    knowledge_base_ids: list[UUID]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    id: UUID
    tenant_id: UUID
    user_id: UUID
    agent_id: UUID
    title: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the LLM asked for (OpenAI function-call shape; ``arguments`` is the raw JSON text)."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Message:
    id: UUID
    conversation_id: UUID
    run_id: UUID
    role: Role
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: str | None
    created_at: datetime

    def to_openai(self) -> dict[str, Any]:
        return openai_message(self.role, self.content, self.tool_calls, self.tool_call_id)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message produced by a run, persisted when the run completes."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return openai_message(self.role, self.content, self.tool_calls, self.tool_call_id)


def openai_message(
    role: Role, content: str, tool_calls: Sequence[ToolCall], tool_call_id: str | None
) -> dict[str, Any]:
    """A message as the OpenAI chat API takes it."""
    if role == Role.TOOL:
        return {"role": "tool", "tool_call_id": tool_call_id, "content": content}
    out: dict[str, Any] = {"role": role.value, "content": content}
    if tool_calls:
        out["tool_calls"] = [c.to_openai() for c in tool_calls]
    return out


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(frozen=True, slots=True)
class Run:
    id: UUID
    tenant_id: UUID
    conversation_id: UUID
    status: RunStatus
    started_at: datetime


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything a run needs, gathered when the user message is written."""

    run: Run
    caller: Caller
    agent: Agent
    user_message: Message
    history: list[Message]
