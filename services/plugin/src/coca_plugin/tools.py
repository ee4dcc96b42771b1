"""Use-cases of tools: describe them to an LLM, and invoke them (for a person testing a tool, and
for an agent's run, where every failure becomes an error result the LLM reads)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from coca_platform.errors import CocaError, NotFound, PayloadTooLarge

from coca_plugin.catalog import LoadedTool, ToolCatalog, load
from coca_plugin.invocation import ToolCaller
from coca_plugin.models import Plugin, ToolAnswer, split_tool_id
from coca_plugin.schemas import validate_arguments

log = logging.getLogger(__name__)

_ERROR_BODY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class AgentToolResult:
    content: str  # what the LLM reads: the tool's answer, or a JSON {"error", "code"}
    is_error: bool = False

    @classmethod
    def error(cls, code: str, message: str, **extra: Any) -> AgentToolResult:
        return cls(orjson.dumps({"error": message, "code": code, **extra}).decode(), is_error=True)


def decoded_result(answer: ToolAnswer) -> Any:
    """The answer's JSON when it is JSON, else its text."""
    if answer.content_type == "application/json" or answer.content_type.endswith("+json"):
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            pass
    return answer.body.decode("utf-8", errors="replace")


class ToolRunner:
    def __init__(self, catalog: ToolCatalog, caller: ToolCaller, *, max_args_bytes: int) -> None:
        self._catalog, self._caller, self._max_args_bytes = catalog, caller, max_args_bytes

    async def definitions(
        self, tenant_id: UUID, tool_ids: list[str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """OpenAI function definitions of the tools that exist, and the ids that do not."""
        wanted = {ident: split_tool_id(ident) for ident in dict.fromkeys(tool_ids)}
        plugins = await self._catalog.plugins(tenant_id, {p[0] for p in wanted.values() if p})
        found, missing = [], []
        for ident, parts in wanted.items():
            plugin = plugins.get(parts[0]) if parts else None
            tool = plugin.tools.get(parts[1]) if plugin and parts else None
            if tool is None:
                missing.append(ident)
                continue
            spec = tool.spec
            function = {"name": ident, "description": spec.description, "parameters": spec.parameters}
            found.append({"type": "function", "function": function})
        return found, missing

    def _encoded(self, arguments: Any) -> bytes:
        body = orjson.dumps(arguments)
        if len(body) > self._max_args_bytes:
            raise PayloadTooLarge(f"tool arguments exceed {self._max_args_bytes} bytes")
        return body

    async def _run(self, plugin: Plugin, tool: LoadedTool, arguments: Any) -> ToolAnswer:
        body = self._encoded(arguments)
        validate_arguments(tool.validator, arguments)
        return await self._caller.call(plugin, tool.spec, body)

    async def invoke(self, plugin: Plugin, tool_name: str, arguments: Any) -> ToolAnswer:
        """A person testing a tool: errors raise (the HTTP edge renders them)."""
        tool = load(plugin).tools.get(tool_name)
        if tool is None:
            raise NotFound(f"plugin {plugin.name!r} has no tool {tool_name!r}")
        return await self._run(plugin, tool, arguments)

    async def invoke_for_agent(self, tenant_id: UUID, ident: str, arguments: str) -> AgentToolResult:
        """An agent's run: ``arguments`` is the LLM's JSON text; every failure is an error result."""
        if len(arguments) > self._max_args_bytes:  # characters <= bytes: a cheap first bound
            return AgentToolResult.error(
                "payload_too_large", f"arguments exceed {self._max_args_bytes} bytes"
            )
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            return AgentToolResult.error("invalid_arguments", "arguments are not valid JSON")
        found = await self._catalog.tool(tenant_id, ident)
        if found is None:
            return AgentToolResult.error("not_found", f"tool {ident!r} does not exist")
        plugin, tool = found
        try:
            answer = await self._run(plugin.plugin, tool, parsed)
        except CocaError as exc:
            return AgentToolResult.error(exc.code, exc.message)
        if not answer.ok:
            text = answer.body.decode("utf-8", errors="replace")[:_ERROR_BODY_CHARS]
            return AgentToolResult.error(
                "tool_error", f"tool answered HTTP {answer.status}", status=answer.status, body=text
            )
        return AgentToolResult(answer.body.decode("utf-8", errors="replace"))
