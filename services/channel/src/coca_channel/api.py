"""HTTP API of the channel service: channel bindings, providers' inbound webhook, internal notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from coca_platform import web
from coca_platform.errors import InvalidArgument, NotFound, PayloadTooLarge
from coca_platform.identity import Identity, IdentityDep
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from coca_channel.events import EmailData, PushData
from coca_channel.models import Channel, ChannelType
from coca_channel.resources import Resources
from coca_channel.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER

router = APIRouter()


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


def _user(identity: Identity) -> UUID | None:
    try:
        return UUID(identity.user_id)
    except ValueError:
        return None  # a service principal


def _id(value: str) -> UUID:
    """A channel id from the path; one that cannot exist is simply not found."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound("no such channel") from None


class ChannelCreate(BaseModel):
    type: ChannelType
    agent_id: UUID
    config: dict[str, Any] = Field(default_factory=dict, max_length=32)


class ChannelPublic(BaseModel):
    id: UUID
    type: ChannelType
    agent_id: UUID
    config: dict[str, Any]
    status: str
    inbound_url: str
    created_at: datetime

    @classmethod
    def of(cls, channel: Channel, public_base_url: str) -> ChannelPublic:
        inbound_url = f"{public_base_url.rstrip('/')}/v1/channels/{channel.id}/inbound"
        return cls(
            id=channel.id,
            type=channel.type,
            agent_id=channel.agent_id,
            config=channel.config,
            status=channel.status,
            inbound_url=inbound_url,
            created_at=channel.created_at,
        )


class ChannelCreated(ChannelPublic):
    signing_secret: str  # shown once


class ChannelList(BaseModel):
    items: list[ChannelPublic]


class InboundAccepted(BaseModel):
    id: UUID
    duplicate: bool


class NotificationRequest(BaseModel):
    """For other services (system callers): who to notify, for which tenant, and how."""

    kind: Literal["email", "push"]
    tenant_id: UUID
    email: EmailData | None = None
    push: PushData | None = None


class NotificationAccepted(BaseModel):
    id: str


@router.post("/v1/channels", status_code=201)
async def create_channel(body: ChannelCreate, identity: IdentityDep, res: ResourcesDep) -> ChannelCreated:
    async with res.channels() as channels:
        channel, secret = await channels.create(
            identity.tenant_uuid(), _user(identity), body.type, body.agent_id, body.config
        )
    public = ChannelPublic.of(channel, res.settings.public_base_url)
    return ChannelCreated(**public.model_dump(), signing_secret=secret)


@router.get("/v1/channels")
async def list_channels(
    identity: IdentityDep, res: ResourcesDep, limit: Annotated[int, Query(ge=1, le=200)] = 100
) -> ChannelList:
    async with res.channels() as channels:
        found = await channels.list(identity.tenant_uuid(), limit)
    return ChannelList(items=[ChannelPublic.of(c, res.settings.public_base_url) for c in found])


@router.get("/v1/channels/{channel_id}")
async def get_channel(channel_id: str, identity: IdentityDep, res: ResourcesDep) -> ChannelPublic:
    async with res.channels() as channels:
        channel = await channels.get(identity.tenant_uuid(), _id(channel_id))
    return ChannelPublic.of(channel, res.settings.public_base_url)


@router.delete("/v1/channels/{channel_id}", status_code=204)
async def delete_channel(channel_id: str, identity: IdentityDep, res: ResourcesDep) -> Response:
    async with res.channels() as channels:
        await channels.delete(identity.tenant_uuid(), _id(channel_id))
    return Response(status_code=204)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return bytes(body)


@router.post("/v1/channels/{channel_id}/inbound", status_code=202)
async def inbound(channel_id: str, request: Request, res: ResourcesDep) -> InboundAccepted:
    """Public (no identity): a provider's message, authenticated by the channel's signing secret."""
    body = await _read_body(request, res.settings.inbound_max_body_bytes)
    async with res.inbound() as service:
        accepted = await service.receive(
            channel_id, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body
        )
    return InboundAccepted(id=accepted.id, duplicate=accepted.duplicate)


@router.post("/internal/v1/notifications", status_code=202)
async def notify(body: NotificationRequest, identity: IdentityDep, res: ResourcesDep) -> NotificationAccepted:
    identity.require_role("system")
    data = body.email if body.kind == "email" else body.push
    if data is None:
        raise InvalidArgument(f"{body.kind}: required for a {body.kind} notification")
    return NotificationAccepted(
        id=await res.events.notification_requested(body.kind, str(body.tenant_id), data)
    )
