"""SQL for tenants, users, refresh tokens, API keys and the audit log (asyncpg; schema ``coca_user``).

Returns domain types, or None where "not there" is the service's call; driver errors become domain
errors. Every statement on a tenant's rows filters by ``tenant_id`` (login looks a user up by
email, which is global).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import orjson
from coca_platform.errors import AlreadyExists, NotFound

from coca_user.models import (
    ApiKey,
    AuditAction,
    Credentials,
    RefreshToken,
    RevokedKey,
    Tenant,
    User,
    VerifiedApiKey,
)

_INSERT_TENANT = "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at"
_INSERT_USER = """
INSERT INTO users (tenant_id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5)
RETURNING id, tenant_id, email, display_name, role, created_at
"""
_GET_USER = """
SELECT id, tenant_id, email, display_name, role, created_at FROM users WHERE id = $1 AND tenant_id = $2
"""
# locked_for_s: seconds the account stays locked (NULL when it is not), by the database's clock.
_GET_CREDENTIALS = """
SELECT id, tenant_id, email, display_name, role, created_at, password_hash,
       CASE WHEN locked_until > now() THEN ceil(extract(epoch FROM locked_until - now()))::int END
           AS locked_for_s
FROM users WHERE lower(email) = lower($1)
"""
# One statement, so concurrent failures count correctly: the Nth consecutive failure locks the
# account and starts the count again.
_RECORD_FAILURE = """
UPDATE users SET
    failed_logins = CASE WHEN failed_logins + 1 >= $3 THEN 0 ELSE failed_logins + 1 END,
    locked_until = CASE WHEN failed_logins + 1 >= $3 THEN now() + make_interval(secs => $4)
                        ELSE locked_until END
WHERE id = $1 AND tenant_id = $2
RETURNING CASE WHEN locked_until > now() THEN ceil(extract(epoch FROM locked_until - now()))::int END
"""
_RECORD_SUCCESS = """
UPDATE users SET failed_logins = 0, locked_until = NULL, password_hash = coalesce($3, password_hash)
WHERE id = $1 AND tenant_id = $2
"""

_INSERT_REFRESH = """
INSERT INTO refresh_tokens (family_id, user_id, tenant_id, token_hash, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
"""
_GET_REFRESH_FOR_UPDATE = """
SELECT id, family_id, user_id, tenant_id, expires_at, used_at, revoked_at FROM refresh_tokens
WHERE token_hash = $1 FOR UPDATE
"""
_GET_REFRESH = """
SELECT id, family_id, user_id, tenant_id, expires_at, used_at, revoked_at FROM refresh_tokens
WHERE token_hash = $1 AND tenant_id = $2
"""
_MARK_REFRESH_USED = "UPDATE refresh_tokens SET used_at = now() WHERE id = $1 AND tenant_id = $2"
_REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = now()
WHERE tenant_id = $1 AND family_id = $2 AND user_id = $3 AND revoked_at IS NULL
"""

# Only for a user of that tenant (no row otherwise).
_INSERT_KEY = """
INSERT INTO api_keys (tenant_id, user_id, name, prefix, key_hash, scopes)
SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND tenant_id = $1)
RETURNING id, tenant_id, user_id, name, prefix, scopes, created_at, last_used_at, revoked_at
"""
_COUNT_ACTIVE_KEYS = """
SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
"""
# $2 NULL: every key of the tenant (owners and admins); else only that user's.
_LIST_KEYS = """
SELECT id, tenant_id, user_id, name, prefix, scopes, created_at, last_used_at, revoked_at FROM api_keys
WHERE tenant_id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND revoked_at IS NULL
ORDER BY created_at DESC, id LIMIT $3
"""
# Revokes a live key; answers for a key already revoked too (revoked_now false), nothing for one the
# caller may not see.
_REVOKE_KEY = """
WITH target AS (
    SELECT id, prefix, key_hash, revoked_at FROM api_keys
    WHERE id = $1 AND tenant_id = $2 AND ($3::uuid IS NULL OR user_id = $3)
    FOR UPDATE
), revoked AS (
    UPDATE api_keys k SET revoked_at = now() FROM target t
    WHERE k.id = t.id AND k.tenant_id = $2 AND t.revoked_at IS NULL
    RETURNING k.id
)
SELECT t.prefix, t.key_hash, EXISTS (SELECT 1 FROM revoked) AS revoked_now FROM target t
"""
_VERIFY_KEY = """
SELECT k.id, k.tenant_id, k.user_id, u.role, k.scopes, k.last_used_at
FROM api_keys k JOIN users u ON u.id = k.user_id AND u.tenant_id = k.tenant_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""
_TOUCH_KEY = """
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND tenant_id = $2
  AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $3))
"""

_INSERT_AUDIT = "INSERT INTO audit_log (tenant_id, user_id, action, data) VALUES ($1, $2, $3, $4::jsonb)"


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        tenant_id=row["tenant_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        created_at=row["created_at"],
    )


class UserRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert_tenant(self, name: str) -> Tenant:
        row = await self._conn.fetchrow(_INSERT_TENANT, name)
        return Tenant(id=row["id"], name=row["name"], created_at=row["created_at"])

    async def insert_user(
        self, *, tenant_id: UUID, email: str, display_name: str, password_hash: str, role: str
    ) -> User:
        try:
            row = await self._conn.fetchrow(_INSERT_USER, tenant_id, email, display_name, password_hash, role)
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists("an account with this email already exists") from exc
        return _user(row)

    async def get(self, tenant_id: UUID, user_id: UUID) -> User | None:
        row = await self._conn.fetchrow(_GET_USER, user_id, tenant_id)
        return _user(row) if row else None

    async def credentials(self, email: str) -> Credentials | None:
        row = await self._conn.fetchrow(_GET_CREDENTIALS, email)
        if row is None:
            return None
        return Credentials(
            user=_user(row), password_hash=row["password_hash"], locked_for_s=row["locked_for_s"]
        )

    async def record_failed_login(self, user: User, *, max_failures: int, lockout_s: int) -> int | None:
        """Count a failure; returns the seconds left on the lock when the account is now locked."""
        locked_for_s: int | None = await self._conn.fetchval(
            _RECORD_FAILURE, user.id, user.tenant_id, max_failures, float(lockout_s)
        )
        return locked_for_s

    async def record_login_success(self, user: User, *, new_password_hash: str | None = None) -> None:
        await self._conn.execute(_RECORD_SUCCESS, user.id, user.tenant_id, new_password_hash)


class SessionRepository:
    """Refresh tokens: one family per login session, rotated on every refresh."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(
        self, *, family_id: UUID, user_id: UUID, tenant_id: UUID, token_hash: str, ttl_s: int
    ) -> None:
        await self._conn.execute(_INSERT_REFRESH, family_id, user_id, tenant_id, token_hash, float(ttl_s))

    async def get_for_update(self, token_hash: str) -> RefreshToken | None:
        """The token and a row lock on it, so one rotation wins (call inside a transaction)."""
        row = await self._conn.fetchrow(_GET_REFRESH_FOR_UPDATE, token_hash)
        return RefreshToken(**dict(row)) if row else None

    async def get(self, tenant_id: UUID, token_hash: str) -> RefreshToken | None:
        row = await self._conn.fetchrow(_GET_REFRESH, token_hash, tenant_id)
        return RefreshToken(**dict(row)) if row else None

    async def mark_used(self, token: RefreshToken) -> None:
        await self._conn.execute(_MARK_REFRESH_USED, token.id, token.tenant_id)

    async def revoke_family(self, tenant_id: UUID, user_id: UUID, family_id: UUID) -> int:
        """Revoke every live token of a session; returns how many were live."""
        status: str = await self._conn.execute(_REVOKE_FAMILY, tenant_id, family_id, user_id)
        return int(status.rsplit(" ", 1)[-1])


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class ApiKeyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(
        self,
        *,
        tenant_id: UUID,
        user_id: UUID,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: tuple[str, ...],
    ) -> ApiKey | None:
        """The new key; None when its random prefix collided (the caller draws another). NotFound when
        the user is not (or no longer) in that tenant."""
        try:
            async with self._conn.transaction():  # a savepoint: a collision must not abort the caller's
                row = await self._conn.fetchrow(
                    _INSERT_KEY, tenant_id, user_id, name, prefix, key_hash, list(scopes)
                )
        except asyncpg.UniqueViolationError:
            return None
        if row is None:
            raise NotFound("user not found")
        return _api_key(row)

    async def count_active(self, tenant_id: UUID, user_id: UUID) -> int:
        count: int = await self._conn.fetchval(_COUNT_ACTIVE_KEYS, tenant_id, user_id)
        return count

    async def list_active(self, tenant_id: UUID, user_id: UUID | None, limit: int) -> list[ApiKey]:
        return [_api_key(r) for r in await self._conn.fetch(_LIST_KEYS, tenant_id, user_id, limit)]

    async def revoke(self, key_id: UUID, tenant_id: UUID, user_id: UUID | None) -> RevokedKey | None:
        """Revoke a key (``user_id`` None: any of the tenant's); None when no such key is visible."""
        row = await self._conn.fetchrow(_REVOKE_KEY, key_id, tenant_id, user_id)
        if row is None:
            return None
        return RevokedKey(prefix=row["prefix"], key_hash=row["key_hash"], revoked_now=row["revoked_now"])

    async def find_live(self, key_hash: str) -> VerifiedApiKey | None:
        row = await self._conn.fetchrow(_VERIFY_KEY, key_hash)
        if row is None:
            return None
        return VerifiedApiKey(
            api_key_id=row["id"],
            tenant_id=row["tenant_id"],
            user_id=row["user_id"],
            role=row["role"],
            scopes=tuple(row["scopes"]),
            last_used_at=row["last_used_at"],
        )

    async def touch(self, key: VerifiedApiKey, interval_s: int) -> None:
        await self._conn.execute(_TOUCH_KEY, key.api_key_id, key.tenant_id, float(interval_s))


class AuditRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def record(
        self, tenant_id: UUID, user_id: UUID | None, action: AuditAction, data: dict[str, Any] | None = None
    ) -> None:
        payload = orjson.dumps(data or {}, default=str).decode()
        await self._conn.execute(_INSERT_AUDIT, tenant_id, user_id, action.value, payload)
