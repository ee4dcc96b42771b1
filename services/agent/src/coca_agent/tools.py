"""The seam between runs and tools: ``ToolInvoker``.

Tools come from plugins (the plugin service, a later issue). Until it exists, ``NoPluginTools``
describes an agent's configured tools to the LLM by name and answers every call with an error
result saying the tool is not available, so runs stay well-formed end to end. A plugin client
implements the same protocol and is wired in ``resources.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import orjson

from coca_agent.models import ToolCall

# OpenAI's rule for function names; tool ids an agent lists must follow it.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolResult:
    content: str  # what the LLM reads (JSON text for structured results)
    is_error: bool = False


class ToolInvoker(Protocol):
    async def definitions(self, tenant_id: UUID, tool_ids: list[str]) -> list[dict[str, Any]]:
        """The agent's tools in OpenAI function format (``[{"type": "function", "function": ...}]``)."""
        ...

    async def invoke(self, tenant_id: UUID, tool_ids: list[str], call: ToolCall) -> ToolResult:
        """Run ``call`` for a run of an agent allowed ``tool_ids``; failures are error results, not raises."""
        ...


class NoPluginTools:
    """No plugin service yet: tools are declared to the LLM, and every call reports them unavailable."""

    async def definitions(self, tenant_id: UUID, tool_ids: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": tool_id,
                    "description": f"Plugin tool {tool_id}.",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
            for tool_id in tool_ids
        ]

    async def invoke(self, tenant_id: UUID, tool_ids: list[str], call: ToolCall) -> ToolResult:
        # Whether or not the agent lists the tool, there is nothing to run it with yet.
        return _error(f"tool {call.name!r} is not available")


def _error(message: str) -> ToolResult:
    return ToolResult(orjson.dumps({"error": message}).decode(), is_error=True)
