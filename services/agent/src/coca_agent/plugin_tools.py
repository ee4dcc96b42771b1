"""The agent's tools from the plugin service: :class:`PluginTools` implements ``ToolInvoker``.

It calls the plugin service's internal endpoints as a signed ``system`` caller:
``POST /internal/v1/tools:resolve`` (OpenAI function definitions of the agent's tools; tool ids are
``<plugin name>__<tool name>`` and double as function names) and ``POST /internal/v1/tools:invoke``
(the LLM's raw JSON arguments in, ``{content, is_error}`` out). The plugin service turns a tool's
failure, timeout or refusal into an error result; this client does the same when the plugin service
itself cannot be reached, so a run continues and the LLM reads what went wrong. Describing the
tools has no such fallback: without definitions the run fails with the plugin service's error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import aiohttp
import orjson
from coca_platform.errors import CocaError
from coca_platform.httpclient import open_http_session, request_json, service_url
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, sign
from pydantic import BaseModel

from coca_agent.models import ToolCall
from coca_agent.tools import ToolResult

log = logging.getLogger(__name__)

PEER = "plugin service"
CALLER = "service:agent"


class _Resolved(BaseModel):
    tools: list[dict[str, Any]]
    missing: list[str]


class _Invoked(BaseModel):
    content: str
    is_error: bool


def _error(code: str, message: str) -> ToolResult:
    return ToolResult(orjson.dumps({"error": message, "code": code}).decode(), is_error=True)


class PluginTools:
    """``ToolInvoker`` over the plugin service. ``timeout_s`` bounds each call to it (keep it above
    the plugin service's ``TOOL_TIMEOUT_S``, which bounds the tool endpoint itself)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        internal_secret: bytes,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self._session, self._secret, self._timeout_s = session, internal_secret, timeout_s
        self._resolve_url = f"{base_url}/internal/v1/tools:resolve"
        self._invoke_url = f"{base_url}/internal/v1/tools:invoke"

    def _headers(self, tenant_id: UUID) -> dict[str, str]:
        encoded, signature = sign(Identity(str(tenant_id), CALLER, role="system"), self._secret)
        return {IDENTITY_HEADER: encoded.decode(), SIGNATURE_HEADER: signature.decode()}

    async def definitions(self, tenant_id: UUID, tool_ids: list[str]) -> list[dict[str, Any]]:
        """The tools that exist, in OpenAI function format; ids that name no tool are left out."""
        resolved = await request_json(
            self._session,
            "POST",
            self._resolve_url,
            peer=PEER,
            json={"tenant_id": str(tenant_id), "tool_ids": tool_ids},
            headers=self._headers(tenant_id),
            timeout_s=self._timeout_s,
            model=_Resolved,
        )
        if resolved.missing:
            data = {"tenant_id": str(tenant_id), "missing": resolved.missing}
            log.warning("agent lists tools that do not exist", extra={"data": data})
        return resolved.tools

    async def invoke(self, tenant_id: UUID, tool_ids: list[str], call: ToolCall) -> ToolResult:
        if call.name not in tool_ids:  # the LLM named a tool this agent was not given
            return _error("tool_not_allowed", f"tool {call.name!r} is not available to this agent")
        try:
            invoked = await request_json(
                self._session,
                "POST",
                self._invoke_url,
                peer=PEER,
                json={"tenant_id": str(tenant_id), "tool_id": call.name, "arguments": call.arguments},
                headers=self._headers(tenant_id),
                timeout_s=self._timeout_s,
                model=_Invoked,
            )
        except CocaError as exc:  # the plugin service failed, not the tool: still a result for the LLM
            data = {"tenant_id": str(tenant_id), "tool_id": call.name, "code": exc.code}
            log.warning("tool invocation through the plugin service failed", extra={"data": data})
            return _error(exc.code, f"the tool could not be run: {exc.message}")
        return ToolResult(invoked.content, is_error=invoked.is_error)


@asynccontextmanager
async def open_plugin_tools(
    plugin_service_addr: str, internal_secret: str, *, timeout_s: float = 30.0, connections: int = 100
) -> AsyncIterator[PluginTools]:
    """A ``PluginTools`` with its own pooled session (``PLUGIN_SERVICE_ADDR``: ``host:port`` or a URL)."""
    async with open_http_session(timeout_s=timeout_s, limit=connections) as session:
        yield PluginTools(
            session, service_url(plugin_service_addr), internal_secret.encode(), timeout_s=timeout_s
        )
