"""Public HTTP edge of the plugin service (through the gateway): register, list, read, change and
remove plugins; invoke a tool to test it. Changes and invocations need role owner or admin."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from coca_platform import web
from coca_platform.identity import IdentityDep
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from coca_plugin.models import PLUGIN_NAME, TOOL_NAME, Plugin, PluginChanges, PluginDraft, ToolSpec, tool_id
from coca_plugin.resources import Resources
from coca_plugin.tools import decoded_result

router = APIRouter()

MANAGERS = ("owner", "admin")

PluginName = Annotated[str, StringConstraints(pattern=PLUGIN_NAME.pattern)]
ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME.pattern)]
ToolDescription = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]
PluginDescription = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ToolName
    description: ToolDescription
    parameters: dict[str, Any]  # a JSON Schema of type object
    endpoint_url: str = Field(min_length=1, max_length=2048)
    method: Literal["POST"] = "POST"

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters, self.endpoint_url, self.method)


class PluginCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PluginName
    description: PluginDescription = ""
    tools: list[ToolIn] = Field(min_length=1, max_length=256)
    # Sent to the tool endpoints as "Authorization: Bearer <secret>"; stored encrypted, never returned.
    secret: Secret | None = None


class PluginUpdate(BaseModel):
    """Fields left out stay as they are; ``tools`` replaces the whole list; ``secret: null`` removes it."""

    model_config = ConfigDict(extra="forbid")

    description: PluginDescription | None = None
    tools: list[ToolIn] | None = Field(default=None, min_length=1, max_length=256)
    secret: Secret | None = None


class ToolOut(BaseModel):
    id: str  # what an agent lists in "tools", and the function name the LLM sees
    name: str
    description: str
    parameters: dict[str, Any]
    endpoint_url: str
    method: str


class PluginOut(BaseModel):
    id: UUID
    name: str
    description: str
    tools: list[ToolOut]
    has_secret: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, plugin: Plugin) -> PluginOut:
        tools = [
            ToolOut(id=tool_id(plugin.name, t.name), **t.to_json())  # the secret is not part of a tool
            for t in plugin.tools
        ]
        return cls(
            id=plugin.id,
            name=plugin.name,
            description=plugin.description,
            tools=tools,
            has_secret=plugin.has_secret,
            version=plugin.version,
            created_at=plugin.created_at,
            updated_at=plugin.updated_at,
        )


class PluginPage(BaseModel):
    items: list[PluginOut]
    next_after: str | None  # pass as ?after= for the next page; null on the last one


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(default_factory=dict)


class InvokeOut(BaseModel):
    tool_id: str
    status: int  # the tool endpoint's HTTP status
    result: Any  # its JSON answer, or its text
    duration_ms: int


@router.post("/v1/plugins", status_code=201)
async def register_plugin(body: PluginCreate, identity: IdentityDep, res: ResourcesDep) -> PluginOut:
    identity.require_role(*MANAGERS)
    draft = PluginDraft(body.name, body.description, tuple(t.spec() for t in body.tools), body.secret)
    return PluginOut.of(await res.registry.register(identity.tenant_uuid(), identity.user_id, draft))


@router.get("/v1/plugins")
async def list_plugins(
    identity: IdentityDep,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    after: Annotated[str, Query(max_length=64)] = "",
) -> PluginPage:
    plugins = await res.registry.page(identity.tenant_uuid(), after=after, limit=limit)
    next_after = plugins[-1].name if len(plugins) == limit else None
    return PluginPage(items=[PluginOut.of(p) for p in plugins], next_after=next_after)


@router.get("/v1/plugins/{plugin_id}")
async def get_plugin(plugin_id: UUID, identity: IdentityDep, res: ResourcesDep) -> PluginOut:
    return PluginOut.of(await res.registry.get(identity.tenant_uuid(), plugin_id))


@router.patch("/v1/plugins/{plugin_id}")
async def update_plugin(
    plugin_id: UUID, body: PluginUpdate, identity: IdentityDep, res: ResourcesDep
) -> PluginOut:
    identity.require_role(*MANAGERS)
    changes = PluginChanges(
        description=body.description,
        tools=tuple(t.spec() for t in body.tools) if body.tools is not None else None,
        secret=body.secret,
        clear_secret="secret" in body.model_fields_set and body.secret is None,
    )
    return PluginOut.of(await res.registry.update(identity.tenant_uuid(), plugin_id, changes))


@router.delete("/v1/plugins/{plugin_id}", status_code=204)
async def delete_plugin(plugin_id: UUID, identity: IdentityDep, res: ResourcesDep) -> Response:
    identity.require_role(*MANAGERS)
    await res.registry.delete(identity.tenant_uuid(), plugin_id)
    return Response(status_code=204)


@router.post("/v1/plugins/{plugin_id}/tools/{tool_name}:invoke")
async def invoke_tool(
    plugin_id: UUID, tool_name: str, body: InvokeRequest, identity: IdentityDep, res: ResourcesDep
) -> InvokeOut:
    identity.require_role(*MANAGERS)
    plugin = await res.registry.get(identity.tenant_uuid(), plugin_id)
    answer = await res.tools.invoke(plugin, tool_name, body.arguments)
    return InvokeOut(
        tool_id=tool_id(plugin.name, tool_name),
        status=answer.status,
        result=decoded_result(answer),
        duration_ms=answer.duration_ms,
    )
