"""Internal HTTP edge for the agent service (role ``system`` only; the gateway does not route
``/internal``): tool definitions for the LLM, and invocations whose failures are results."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
from coca_platform import web
from coca_platform.identity import IdentityDep
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from coca_plugin.resources import Resources

router = APIRouter()

ToolIds = Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=128)]


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


class ResolveRequest(BaseModel):
    tenant_id: UUID
    tool_ids: ToolIds


class AgentInvokeRequest(BaseModel):
    tenant_id: UUID
    tool_id: str = Field(min_length=1, max_length=128)
    arguments: str = ""  # the LLM's JSON text, as it produced it


@router.post("/internal/v1/tools:resolve")
async def resolve_tools(body: ResolveRequest, identity: IdentityDep, res: ResourcesDep) -> Response:
    """``{"tools": [OpenAI function definitions], "missing": [ids that name no tool]}``."""
    identity.require_role("system")
    tools, missing = await res.tools.definitions(body.tenant_id, body.tool_ids)
    return Response(orjson.dumps({"tools": tools, "missing": missing}), media_type="application/json")


@router.post("/internal/v1/tools:invoke")
async def invoke_tool_for_agent(
    body: AgentInvokeRequest, identity: IdentityDep, res: ResourcesDep
) -> Response:
    """``{"content", "is_error"}``: a tool that fails, times out or is refused is an error result."""
    identity.require_role("system")
    result = await res.tools.invoke_for_agent(body.tenant_id, body.tool_id, body.arguments)
    payload = {"content": result.content, "is_error": result.is_error}
    return Response(orjson.dumps(payload), media_type="application/json")
