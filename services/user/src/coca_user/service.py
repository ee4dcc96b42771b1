"""Use-cases of accounts and sessions: register, login, refresh (rotating), logout, me.

Transactions are opened here; bcrypt runs outside them (in the hasher's thread pool) so no
connection is held while a password is checked. Audit rows are written in the same transaction
as the change they record.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from coca_platform.db import Pool
from coca_platform.errors import AlreadyExists, NotFound, QuotaExceeded, Unauthenticated

from coca_user._passwords import PasswordHasher
from coca_user._tokens import AccessTokens, new_refresh_token, sha256_hex
from coca_user.models import AuditAction, Role, TokenPair, User
from coca_user.repository import AuditRepository, SessionRepository, UserRepository
from coca_user.revocations import RevokedSessions

log = logging.getLogger(__name__)


def _invalid_credentials() -> Unauthenticated:
    # One message for an unknown email and a wrong password.
    return Unauthenticated("invalid email or password", code="invalid_credentials")


def _locked(retry_after: int) -> QuotaExceeded:
    return QuotaExceeded(
        "too many failed logins: the account is temporarily locked",
        retry_after=max(1, retry_after),
        code="account_locked",
    )


def _invalid_refresh() -> Unauthenticated:
    return Unauthenticated("invalid refresh token", code="invalid_refresh_token")


class AuthService:
    def __init__(
        self,
        pool: Pool,
        passwords: PasswordHasher,
        access_tokens: AccessTokens,
        revoked_sessions: RevokedSessions,
        *,
        refresh_ttl_s: int,
        max_failures: int,
        lockout_s: int,
    ) -> None:
        self._pool = pool
        self._passwords = passwords
        self._access = access_tokens
        self._revoked = revoked_sessions
        self._refresh_ttl_s = refresh_ttl_s
        self._max_failures = max_failures
        self._lockout_s = lockout_s

    async def register(
        self, *, email: str, password: str, display_name: str, tenant_name: str | None
    ) -> User:
        """A new tenant with this user as its owner."""
        async with self._pool.acquire() as conn:
            if await UserRepository(conn).credentials(email) is not None:  # spare the bcrypt work
                raise AlreadyExists("an account with this email already exists")
        password_hash = await self._passwords.hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            users = UserRepository(conn)
            tenant = await users.insert_tenant(tenant_name or f"{display_name}'s workspace")
            user = await users.insert_user(
                tenant_id=tenant.id,
                email=email,
                display_name=display_name,
                password_hash=password_hash,
                role=Role.OWNER.value,
            )
            await AuditRepository(conn).record(tenant.id, user.id, AuditAction.USER_REGISTERED)
        log.info("user registered", extra={"data": {"user_id": str(user.id), "tenant_id": str(tenant.id)}})
        return user

    async def login(self, *, email: str, password: str) -> TokenPair:
        async with self._pool.acquire() as conn:
            creds = await UserRepository(conn).credentials(email)
        if creds is None:
            await self._passwords.verify_dummy(password)
            raise _invalid_credentials()
        user = creds.user
        if creds.locked_for_s is not None:
            raise _locked(creds.locked_for_s)
        if not await self._passwords.verify(password, creds.password_hash):
            await self._record_failure(user)
            raise _invalid_credentials()
        new_hash = None
        if self._passwords.needs_rehash(creds.password_hash):  # BCRYPT_COST changed since it was set
            new_hash = await self._passwords.hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            await UserRepository(conn).record_login_success(user, new_password_hash=new_hash)
            session_id = uuid.uuid4()
            pair = await self._issue(conn, user, session_id)
            await AuditRepository(conn).record(
                user.tenant_id, user.id, AuditAction.LOGIN_SUCCEEDED, {"session_id": session_id}
            )
        log.info("user logged in", extra={"data": {"user_id": str(user.id), "session_id": str(session_id)}})
        return pair

    async def _record_failure(self, user: User) -> None:
        """Count a failed login; raises account_locked when this failure locks the account."""
        async with self._pool.acquire() as conn, conn.transaction():
            locked_for_s = await UserRepository(conn).record_failed_login(
                user, max_failures=self._max_failures, lockout_s=self._lockout_s
            )
            audit = AuditRepository(conn)
            await audit.record(user.tenant_id, user.id, AuditAction.LOGIN_FAILED)
            if locked_for_s is not None:
                await audit.record(
                    user.tenant_id, user.id, AuditAction.ACCOUNT_LOCKED, {"seconds": locked_for_s}
                )
        if locked_for_s is not None:
            log.warning(
                "account locked after repeated failed logins", extra={"data": {"user_id": str(user.id)}}
            )
            raise _locked(locked_for_s)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is spent and a new pair issued in the same session. A token
        presented twice (or after its session ended) means it leaked: the whole session is revoked."""
        token_hash = sha256_hex(refresh_token)
        async with self._pool.acquire() as conn, conn.transaction():
            sessions = SessionRepository(conn)
            token = await sessions.get_for_update(token_hash)
            if token is None:
                raise _invalid_refresh()
            reused = token.used_at is not None or token.revoked_at is not None
            if reused:
                await sessions.revoke_family(token.tenant_id, token.user_id, token.family_id)
                await AuditRepository(conn).record(
                    token.tenant_id,
                    token.user_id,
                    AuditAction.REFRESH_REUSED,
                    {"session_id": token.family_id},
                )
            else:
                if token.expires_at <= datetime.now(UTC):
                    raise Unauthenticated("refresh token expired", code="refresh_token_expired")
                user = await UserRepository(conn).get(token.tenant_id, token.user_id)
                if user is None:
                    raise _invalid_refresh()
                await sessions.mark_used(token)
                pair = await self._issue(conn, user, token.family_id)
        if reused:
            await self._revoked.add(token.family_id)
            log.warning(
                "refresh token reuse detected; session revoked",
                extra={"data": {"user_id": str(token.user_id), "session_id": str(token.family_id)}},
            )
            raise Unauthenticated(
                "refresh token was already used: the session has been revoked", code="refresh_token_reused"
            )
        return pair

    async def logout(
        self, *, tenant_id: UUID, user_id: UUID, session_id: UUID | None, refresh_token: str | None
    ) -> None:
        """End the caller's session(s): the one its access token names and/or the refresh token's."""
        sessions_ended: set[UUID] = {session_id} if session_id else set()
        async with self._pool.acquire() as conn, conn.transaction():
            repo = SessionRepository(conn)
            if refresh_token:
                token = await repo.get(tenant_id, sha256_hex(refresh_token))
                if token is not None and token.user_id == user_id:
                    sessions_ended.add(token.family_id)
            for family_id in sessions_ended:
                await repo.revoke_family(tenant_id, user_id, family_id)
            await AuditRepository(conn).record(
                tenant_id, user_id, AuditAction.LOGOUT, {"session_ids": sorted(map(str, sessions_ended))}
            )
        for family_id in sessions_ended:
            await self._revoked.add(family_id)
        log.info(
            "user logged out", extra={"data": {"user_id": str(user_id), "sessions": len(sessions_ended)}}
        )

    async def me(self, tenant_id: UUID, user_id: UUID) -> User:
        async with self._pool.acquire() as conn:
            user = await UserRepository(conn).get(tenant_id, user_id)
        if user is None:
            raise NotFound("user not found")
        return user

    async def _issue(self, conn: asyncpg.Connection, user: User, session_id: UUID) -> TokenPair:
        refresh_token = new_refresh_token()
        await SessionRepository(conn).insert(
            family_id=session_id,
            user_id=user.id,
            tenant_id=user.tenant_id,
            token_hash=sha256_hex(refresh_token),
            ttl_s=self._refresh_ttl_s,
        )
        access_token = self._access.issue(
            user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=session_id
        )
        return TokenPair(
            access_token=access_token, refresh_token=refresh_token, expires_in=self._access.ttl_s
        )
