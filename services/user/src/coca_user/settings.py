"""The user service's settings (environment variables, case-insensitive)."""

from __future__ import annotations

from coca_platform.settings import DatabaseSettings, PlatformSettings, RedisSettings
from pydantic import Field, SecretStr


class Settings(PlatformSettings, DatabaseSettings, RedisSettings):
    service_name: str = "user"
    http_port: int = 8001

    # RS256 signing key for access tokens (PEM, PKCS#8 or PKCS#1). Unset: an ephemeral key in
    # local/test (logged as a WARNING); staging/prod refuse to start without one.
    jwt_private_key: SecretStr | None = None
    # Public keys (PEM blocks, concatenated) of keys rotated out: still published in the JWKS so the
    # tokens they signed verify until they expire. Drop them after ACCESS_TOKEN_TTL_S.
    jwt_previous_public_keys: str = ""
    jwt_issuer: str = "coca-user"
    jwt_audience: str = "coca"
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=60)

    # bcrypt work factor and the size of the thread pool that runs it (never on the event loop).
    bcrypt_cost: int = Field(default=12, ge=4, le=31)
    bcrypt_workers: int = Field(default=2, ge=1, le=64)

    # Consecutive failed logins before the account is locked, and for how long.
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_s: int = Field(default=900, ge=1)

    # An API key's last_used_at is written at most once per this many seconds.
    api_key_touch_interval_s: int = Field(default=60, ge=0)
    # Most API keys one user may hold (active ones).
    api_keys_per_user: int = Field(default=100, ge=1)
