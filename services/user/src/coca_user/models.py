"""Domain types of the user service. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


# Roles that manage everything in their tenant (e.g. every API key, not only their own).
TENANT_ADMIN_ROLES = frozenset({Role.OWNER.value, Role.ADMIN.value})


class AuditAction(enum.StrEnum):
    USER_REGISTERED = "user.registered"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    ACCOUNT_LOCKED = "account.locked"
    LOGOUT = "logout"
    REFRESH_REUSED = "refresh_token.reused"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    tenant_id: UUID
    email: str
    display_name: str
    role: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    """What login needs of a user: never leaves the service layer."""

    user: User
    password_hash: str
    locked_for_s: int | None  # seconds left on a lockout, None when not locked


@dataclass(frozen=True, slots=True)
class RefreshToken:
    id: UUID
    family_id: UUID
    user_id: UUID
    tenant_id: UUID
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """An API key just created: the only time its plaintext exists."""

    api_key: ApiKey
    key: str


@dataclass(frozen=True, slots=True)
class RevokedKey:
    prefix: str
    key_hash: str
    revoked_now: bool  # False: it was revoked already


@dataclass(frozen=True, slots=True)
class VerifiedApiKey:
    api_key_id: UUID
    tenant_id: UUID
    user_id: UUID
    role: str
    scopes: tuple[str, ...]
    last_used_at: datetime | None
