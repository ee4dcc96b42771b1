"""Use-cases of API keys: create (shown once), list, revoke, and verify (for the gateway).

A key is ``coca_<prefix8>_<secret32>``; only its SHA-256 hex digest is stored. Members manage their
own keys; owners and admins manage every key of their tenant.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import UUID

from coca_platform.db import Pool
from coca_platform.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

from coca_user._tokens import looks_like_api_key, new_api_key, sha256_hex
from coca_user.models import TENANT_ADMIN_ROLES, ApiKey, AuditAction, NewApiKey, VerifiedApiKey
from coca_user.repository import ApiKeyRepository, AuditRepository
from coca_user.revocations import ApiKeyAuthCache

log = logging.getLogger(__name__)

_LIST_LIMIT = 1000
_PREFIX_ATTEMPTS = 5


def _invalid_key() -> Unauthenticated:
    return Unauthenticated("invalid API key", code="invalid_api_key")


class ApiKeyService:
    def __init__(
        self, pool: Pool, auth_cache: ApiKeyAuthCache, *, touch_interval_s: int, max_per_user: int
    ) -> None:
        self._pool = pool
        self._auth_cache = auth_cache
        self._touch_interval_s = touch_interval_s
        self._max_per_user = max_per_user

    async def create(
        self, *, tenant_id: UUID, user_id: UUID, via_api_key: bool, name: str, scopes: tuple[str, ...]
    ) -> NewApiKey:
        if via_api_key:
            raise PermissionDenied("API keys cannot create API keys: sign in to create one")
        async with self._pool.acquire() as conn, conn.transaction():
            repo = ApiKeyRepository(conn)
            if await repo.count_active(tenant_id, user_id) >= self._max_per_user:
                raise InvalidArgument(
                    f"at most {self._max_per_user} active API keys per user: revoke one first",
                    code="too_many_api_keys",
                )
            for _ in range(_PREFIX_ATTEMPTS):
                key, prefix = new_api_key()
                api_key = await repo.insert(
                    tenant_id=tenant_id,
                    user_id=user_id,
                    name=name,
                    prefix=prefix,
                    key_hash=sha256_hex(key),
                    scopes=scopes,
                )
                if api_key is not None:
                    break
            else:  # pragma: no cover - 36^8 prefixes; five collisions in a row means something is broken
                raise RuntimeError("could not draw a unique API key prefix")
            await AuditRepository(conn).record(
                tenant_id,
                user_id,
                AuditAction.API_KEY_CREATED,
                {"api_key_id": api_key.id, "prefix": prefix, "scopes": list(scopes)},
            )
        log.info(
            "api key created", extra={"data": {"api_key_id": str(api_key.id), "tenant_id": str(tenant_id)}}
        )
        return NewApiKey(api_key=api_key, key=key)

    async def list_keys(self, *, tenant_id: UUID, user_id: UUID, role: str) -> list[ApiKey]:
        owner_filter = None if role in TENANT_ADMIN_ROLES else user_id
        async with self._pool.acquire() as conn:
            return await ApiKeyRepository(conn).list_active(tenant_id, owner_filter, _LIST_LIMIT)

    async def revoke(self, *, tenant_id: UUID, user_id: UUID, role: str, key_id: UUID) -> None:
        """Revoke a key of the caller's (any of the tenant's, for owners and admins). Idempotent; a key
        the caller may not see is NotFound, never PermissionDenied."""
        owner_filter = None if role in TENANT_ADMIN_ROLES else user_id
        async with self._pool.acquire() as conn, conn.transaction():
            revoked = await ApiKeyRepository(conn).revoke(key_id, tenant_id, owner_filter)
            if revoked is None:
                raise NotFound(f"API key {str(key_id)!r} not found")
            if revoked.revoked_now:
                await AuditRepository(conn).record(
                    tenant_id,
                    user_id,
                    AuditAction.API_KEY_REVOKED,
                    {"api_key_id": key_id, "prefix": revoked.prefix},
                )
        await self._auth_cache.forget(revoked.key_hash)  # else the gateway honours it until its entry expires
        if revoked.revoked_now:
            log.info(
                "api key revoked", extra={"data": {"api_key_id": str(key_id), "tenant_id": str(tenant_id)}}
            )

    async def verify(self, key: str) -> VerifiedApiKey:
        """Who a presented key acts for. Records use at most once per ``touch_interval_s``."""
        if not looks_like_api_key(key):
            raise _invalid_key()
        async with self._pool.acquire() as conn:
            repo = ApiKeyRepository(conn)
            found = await repo.find_live(sha256_hex(key))
            if found is None:
                raise _invalid_key()
            if self._touch_is_due(found):
                await repo.touch(found, self._touch_interval_s)
        return found

    def _touch_is_due(self, key: VerifiedApiKey) -> bool:
        if key.last_used_at is None:
            return True
        return (datetime.now(UTC) - key.last_used_at).total_seconds() >= self._touch_interval_s
