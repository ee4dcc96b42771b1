"""HTTP API of the agent service: agents, conversations, messages (JSON or SSE), event replay."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from coca_platform.errors import NotFound, Unauthenticated
from coca_platform.identity import Identity, IdentityDep
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from coca_agent.events import message_payload
from coca_agent.models import Agent, Caller, Conversation
from coca_agent.resources import Resources
from coca_agent.sse import ReplayStream, RunStream
from coca_agent.tools import TOOL_NAME

router = APIRouter()


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)
]
Prompt = Annotated[str, StringConstraints(max_length=100_000), AfterValidator(_no_nul)]
ModelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)
]
ToolId = Annotated[str, StringConstraints(pattern=TOOL_NAME.pattern)]
Tools = Annotated[list[ToolId], Field(max_length=64), AfterValidator(_unique)]
KnowledgeBases = Annotated[list[UUID], Field(max_length=64), AfterValidator(_unique)]


class AgentCreate(BaseModel):
    name: Name
    system_prompt: Prompt = ""
    model: ModelName | None = None  # None: the service's LLM_MODEL
    tools: Tools = []
    knowledge_base_ids: KnowledgeBases = []


class AgentUpdate(BaseModel):
    name: Name | None = None
    system_prompt: Prompt | None = None
    model: ModelName | None = None
    tools: Tools | None = None
    knowledge_base_ids: KnowledgeBases | None = None

    @model_validator(mode="after")
    def _only_model_may_be_null(self) -> AgentUpdate:
        for name in self.model_fields_set - {"model"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class AgentPublic(BaseModel):
    id: UUID
    owner_id: UUID
    name: str
    system_prompt: str
    model: str | None
    tools: list[str]
    knowledge_base_ids: list[UUID]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentPublic:
        return cls(
            id=agent.id,
            owner_id=agent.user_id,
            name=agent.name,
            system_prompt=agent.system_prompt,
            model=agent.model,
            tools=agent.tools,
            knowledge_base_ids=agent.knowledge_base_ids,
            created_at=agent.created_at,
            updated_at=agent.updated_at,
        )


class AgentsPage(BaseModel):
    items: list[AgentPublic]


class ConversationCreate(BaseModel):
    agent_id: UUID
    title: Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)] | None = None


class ConversationPublic(BaseModel):
    id: UUID
    agent_id: UUID
    user_id: UUID
    title: str | None
    created_at: datetime

    @classmethod
    def of(cls, c: Conversation) -> ConversationPublic:
        return cls(id=c.id, agent_id=c.agent_id, user_id=c.user_id, title=c.title, created_at=c.created_at)


class MessageCreate(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=False)
    content: str  # length and emptiness checked by the service (MAX_MESSAGE_CHARS)


class MessagePublic(BaseModel):
    id: UUID
    conversation_id: UUID
    run_id: UUID
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None  # assistant messages that call tools
    tool_call_id: str | None  # tool messages: the call answered
    created_at: datetime


class MessagesPage(BaseModel):
    items: list[MessagePublic]


def _res(request: Request) -> Resources:
    res: Resources = request.state.resources
    return res


def _caller(identity: Identity) -> Caller:
    try:
        return Caller(UUID(identity.tenant_id), UUID(identity.user_id), identity.role)
    except ValueError as exc:
        raise Unauthenticated("malformed internal identity") from exc


def _id(value: str, what: str) -> UUID:
    """An id from the path; one that cannot exist is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


@router.post("/v1/agents", status_code=201)
async def create_agent(body: AgentCreate, identity: IdentityDep, request: Request) -> AgentPublic:
    async with _res(request).agents() as agents:
        return AgentPublic.of(await agents.create(_caller(identity), body.model_dump()))


@router.get("/v1/agents")
async def list_agents(identity: IdentityDep, request: Request) -> AgentsPage:
    async with _res(request).agents() as agents:
        return AgentsPage(items=[AgentPublic.of(a) for a in await agents.list(_caller(identity))])


@router.get("/v1/agents/{agent_id}")
async def get_agent(agent_id: str, identity: IdentityDep, request: Request) -> AgentPublic:
    async with _res(request).agents() as agents:
        return AgentPublic.of(await agents.get(_caller(identity), _id(agent_id, "agent")))


@router.patch("/v1/agents/{agent_id}")
async def update_agent(
    agent_id: str, body: AgentUpdate, identity: IdentityDep, request: Request
) -> AgentPublic:
    changes = body.model_dump(include=body.model_fields_set)
    async with _res(request).agents() as agents:
        return AgentPublic.of(await agents.update(_caller(identity), _id(agent_id, "agent"), changes))


@router.delete("/v1/agents/{agent_id}", status_code=204)
async def delete_agent(agent_id: str, identity: IdentityDep, request: Request) -> Response:
    async with _res(request).agents() as agents:
        await agents.delete(_caller(identity), _id(agent_id, "agent"))
    return Response(status_code=204)


@router.post("/v1/conversations", status_code=201)
async def create_conversation(
    body: ConversationCreate, identity: IdentityDep, request: Request
) -> ConversationPublic:
    async with _res(request).conversations() as conversations:
        return ConversationPublic.of(await conversations.create(_caller(identity), body.agent_id, body.title))


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str, identity: IdentityDep, request: Request
) -> ConversationPublic:
    async with _res(request).conversations() as conversations:
        found = await conversations.get(_caller(identity), _id(conversation_id, "conversation"))
        return ConversationPublic.of(found)


@router.get("/v1/conversations/{conversation_id}/messages")
async def list_messages(
    conversation_id: str,
    identity: IdentityDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> MessagesPage:
    """The latest ``limit`` messages, oldest first."""
    async with _res(request).conversations() as conversations:
        found = await conversations.messages(_caller(identity), _id(conversation_id, "conversation"), limit)
    return MessagesPage(items=[MessagePublic.model_validate(message_payload(m)) for m in found])


@router.post("/v1/conversations/{conversation_id}/messages", response_model=MessagePublic)
async def post_message(
    conversation_id: str, body: MessageCreate, identity: IdentityDep, request: Request
) -> Any:
    """With ``Accept: text/event-stream``: the run's events as SSE. Otherwise: the reply, once persisted."""
    res = _res(request)
    listen = "text/event-stream" in request.headers.get("accept", "")
    async with res.conversations() as conversations:  # the connection goes back before the run streams
        handle = await conversations.post_message(
            _caller(identity), _id(conversation_id, "conversation"), body.content, listen=listen
        )
    if listen:
        return RunStream(handle, res.settings.sse_heartbeat_s)
    outcome = await asyncio.shield(handle.task)  # a caller that leaves does not cancel the run
    if outcome.error is not None:
        raise outcome.error
    assert outcome.message is not None
    return MessagePublic.model_validate(message_payload(outcome.message))


@router.get("/v1/conversations/{conversation_id}/events")
async def replay_events(
    conversation_id: str,
    identity: IdentityDep,
    request: Request,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The conversation's events after a cursor (``?after=`` or ``Last-Event-ID``), then live ones."""
    res = _res(request)
    async with res.conversations() as conversations:
        conversation = await conversations.get(_caller(identity), _id(conversation_id, "conversation"))
    position = await res.log.position(str(conversation.id), after or last_event_id)
    return ReplayStream(res.log, str(conversation.id), position, res.settings.sse_heartbeat_s)
