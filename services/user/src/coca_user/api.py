"""HTTP edge of the user service: request/response schemas and routes (paths as the gateway forwards them)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

import orjson
from coca_platform import web
from coca_platform.errors import PermissionDenied
from coca_platform.identity import Identity, IdentityDep
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, StringConstraints, field_validator

from coca_user.models import ApiKey, TokenPair, User
from coca_user.resources import Resources

router = APIRouter()

# Pragmatic address check (RFC 5321 lengths, a dotted ASCII/punycode domain); delivery is not checked.
_EMAIL_RE = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]$"
)
_SCOPE_RE = r"^[A-Za-z0-9_.:*-]{1,64}$"

Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254)]
TenantName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


class RegisterRequest(BaseModel):
    email: Email
    password: str = Field(min_length=8, max_length=1024)
    display_name: DisplayName
    tenant_name: TenantName | None = None

    @field_validator("email")
    @classmethod
    def _email_format(cls, value: str) -> str:
        if not _EMAIL_RE.match(value):
            raise ValueError("not a valid email address")
        return value


class LoginRequest(BaseModel):
    email: Email
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(default=None, min_length=1, max_length=512)


class UserOut(BaseModel):
    id: UUID
    email: str
    display_name: str
    tenant_id: UUID
    role: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            tenant_id=user.tenant_id,
            role=user.role,
            created_at=user.created_at,
        )


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokenPairOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )


class CreateApiKeyRequest(BaseModel):
    name: DisplayName
    scopes: list[Annotated[str, Field(pattern=_SCOPE_RE)]] = Field(default_factory=list, max_length=50)


class ApiKeyOut(BaseModel):
    id: UUID
    prefix: str
    name: str
    scopes: list[str]
    user_id: UUID
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            prefix=key.prefix,
            name=key.name,
            scopes=list(key.scopes),
            user_id=key.user_id,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
        )


class ApiKeyCreatedOut(ApiKeyOut):
    key: str  # shown once


class ApiKeyListOut(BaseModel):
    items: list[ApiKeyOut]


class VerifyApiKeyRequest(BaseModel):
    key: str = Field(min_length=1, max_length=256)


def _caller(identity: Identity) -> tuple[UUID, UUID]:
    """``(tenant_id, user_id)`` of a user identity; service identities have no account here."""
    try:
        return UUID(identity.tenant_id), UUID(identity.user_id)
    except ValueError:
        raise PermissionDenied("this endpoint needs a user identity") from None


def _session_of(request: Request, identity: Identity, res: Resources) -> UUID | None:
    """The session the caller's access token belongs to: from the identity when the gateway carries
    it, else from the bearer token itself (verified here: it is one of ours, for this very user)."""
    sid = getattr(identity, "session_id", None)
    if sid is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = res.access_tokens.decode(token.strip()) if scheme.lower() == "bearer" and token else None
        if claims and claims["sub"] == identity.user_id and claims["tid"] == identity.tenant_id:
            sid = claims["sid"]
    try:
        return UUID(str(sid)) if sid else None
    except ValueError:
        return None


@router.post("/v1/auth/register", status_code=201, response_model=UserOut)
async def register(body: RegisterRequest, res: ResourcesDep) -> UserOut:
    user = await res.auth.register(
        email=body.email, password=body.password, display_name=body.display_name, tenant_name=body.tenant_name
    )
    return UserOut.of(user)


@router.post("/v1/auth/login", response_model=TokenPairOut)
async def login(body: LoginRequest, res: ResourcesDep) -> TokenPairOut:
    return TokenPairOut.of(await res.auth.login(email=body.email, password=body.password))


@router.post("/v1/auth/refresh", response_model=TokenPairOut)
async def refresh(body: RefreshRequest, res: ResourcesDep) -> TokenPairOut:
    return TokenPairOut.of(await res.auth.refresh(body.refresh_token))


@router.post("/v1/auth/logout", status_code=204)
async def logout(
    request: Request, identity: IdentityDep, res: ResourcesDep, body: LogoutRequest | None = None
) -> Response:
    tenant_id, user_id = _caller(identity)
    await res.auth.logout(
        tenant_id=tenant_id,
        user_id=user_id,
        session_id=_session_of(request, identity, res),
        refresh_token=body.refresh_token if body else None,
    )
    return Response(status_code=204)


@router.get("/v1/users/me", response_model=UserOut)
async def me(identity: IdentityDep, res: ResourcesDep) -> UserOut:
    tenant_id, user_id = _caller(identity)
    return UserOut.of(await res.auth.me(tenant_id, user_id))


@router.get("/.well-known/jwks.json")
async def jwks(res: ResourcesDep) -> Response:
    return Response(
        orjson.dumps(res.access_tokens.jwks),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.post("/v1/api-keys", status_code=201, response_model=ApiKeyCreatedOut)
async def create_api_key(
    body: CreateApiKeyRequest, identity: IdentityDep, res: ResourcesDep
) -> ApiKeyCreatedOut:
    tenant_id, user_id = _caller(identity)
    created = await res.api_keys.create(
        tenant_id=tenant_id,
        user_id=user_id,
        via_api_key=identity.method == "api_key",
        name=body.name,
        scopes=tuple(dict.fromkeys(body.scopes)),
    )
    return ApiKeyCreatedOut(**ApiKeyOut.of(created.api_key).model_dump(), key=created.key)


@router.get("/v1/api-keys", response_model=ApiKeyListOut)
async def list_api_keys(identity: IdentityDep, res: ResourcesDep) -> ApiKeyListOut:
    tenant_id, user_id = _caller(identity)
    keys = await res.api_keys.list_keys(tenant_id=tenant_id, user_id=user_id, role=identity.role)
    return ApiKeyListOut(items=[ApiKeyOut.of(k) for k in keys])


@router.delete("/v1/api-keys/{key_id}", status_code=204)
async def delete_api_key(key_id: UUID, identity: IdentityDep, res: ResourcesDep) -> Response:
    tenant_id, user_id = _caller(identity)
    await res.api_keys.revoke(tenant_id=tenant_id, user_id=user_id, role=identity.role, key_id=key_id)
    return Response(status_code=204)


@router.post("/internal/v1/api-keys/verify")
async def verify_api_key(body: VerifyApiKeyRequest, identity: IdentityDep, res: ResourcesDep) -> Response:
    """For the gateway (role ``system``): who does this key act for? Called per request: kept lean."""
    identity.require_role("system")
    found = await res.api_keys.verify(body.key)
    payload = {
        "tenant_id": str(found.tenant_id),
        "user_id": str(found.user_id),
        "role": found.role,
        "scopes": list(found.scopes),
        "api_key_id": str(found.api_key_id),
    }
    return Response(orjson.dumps(payload), media_type="application/json")
