"""What the user service holds while it runs, opened and closed by the lifespan in ``app.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from coca_platform.cache import Redis, open_redis
from coca_platform.db import Pool, create_pool

from coca_user._passwords import PasswordHasher
from coca_user._tokens import AccessTokens, load_previous_keys, load_signing_key
from coca_user.api_key_service import ApiKeyService
from coca_user.revocations import ApiKeyAuthCache, RevokedSessions
from coca_user.service import AuthService
from coca_user.settings import Settings


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    redis: Redis
    access_tokens: AccessTokens
    auth: AuthService
    api_keys: ApiKeyService


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    # bcrypt (and key generation) run here, never on the event loop; the pool bounds the CPU they take.
    executor = ThreadPoolExecutor(max_workers=settings.bcrypt_workers, thread_name_prefix="coca-bcrypt")
    try:
        key = await asyncio.get_running_loop().run_in_executor(executor, load_signing_key, settings)
        access_tokens = AccessTokens(
            key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_s=settings.access_token_ttl_s,
            previous=load_previous_keys(settings),
        )
        passwords = PasswordHasher(executor, settings.bcrypt_cost)
        async with (
            create_pool(
                settings.database_url,
                schema="coca_user",
                application_name="coca-user",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            ) as pool,
            open_redis(settings.redis_url) as redis,
        ):
            await passwords.prepare()
            auth = AuthService(
                pool,
                passwords,
                access_tokens,
                RevokedSessions(redis, ttl_s=settings.access_token_ttl_s),
                refresh_ttl_s=settings.refresh_token_ttl_s,
                max_failures=settings.login_max_failures,
                lockout_s=settings.login_lockout_s,
            )
            api_keys = ApiKeyService(
                pool,
                ApiKeyAuthCache(redis),
                touch_interval_s=settings.api_key_touch_interval_s,
                max_per_user=settings.api_keys_per_user,
            )
            yield Resources(settings, pool, redis, access_tokens, auth, api_keys)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
