"""Gateway settings (environment variables, case-insensitive; defaults suit ``make dev``)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from coca_platform.settings import PlatformSettings, RedisSettings
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode


class Settings(PlatformSettings, RedisSettings):
    service_name: str = "gateway"
    http_port: int = 8080

    # Peers, each as ``host:port`` or a base URL.
    user_service_addr: str = "http://127.0.0.1:8001"
    agent_service_addr: str = "http://127.0.0.1:8002"
    channel_service_addr: str = "http://127.0.0.1:8003"
    memory_service_addr: str = "http://127.0.0.1:8004"
    billing_service_addr: str = "http://127.0.0.1:8005"
    plugin_service_addr: str = "http://127.0.0.1:8006"
    ws_gateway_service_addr: str = "http://127.0.0.1:8081"

    # Largest request body (bytes) the gateway relays: GATEWAY_MAX_BODY_BYTES (21 MiB); 413 beyond.
    max_body_bytes: int = Field(
        default=21 * 1024 * 1024,  # above the memory service's 20 MiB document limit
        ge=1024,
        validation_alias=AliasChoices("gateway_max_body_bytes", "max_body_bytes"),
    )

    # Requests per minute per user (GCRA: the whole minute's allowance may come as a burst).
    rate_limit_user_per_min: int = Field(default=600, ge=1)
    # Requests per minute per API key, and per client IP (all routes).
    rate_limit_key_per_min: int = Field(default=1200, ge=1)
    rate_limit_ip_per_min: int = Field(default=1200, ge=1)
    # Public auth routes (register/login/refresh) per client IP: slows credential stuffing.
    rate_limit_auth_ip_per_min: int = Field(default=20, ge=1)
    # Seconds a rate-limit check may wait on Redis before the request goes through unchecked.
    rate_limit_redis_timeout_s: float = 0.25

    # Browser origins allowed by CORS (comma-separated or a JSON list).
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000", "http://127.0.0.1:3000"]
    # One JSON line per proxied request (method, route, status, duration, request id).
    access_log: bool = True
    # X-Forwarded-For entries appended by trusted proxies in front of the gateway (0: none trusted).
    trusted_proxy_hops: int = Field(default=0, ge=0)

    # Seconds to connect to an upstream (503 upstream_unavailable beyond).
    upstream_connect_timeout_s: float = 3.0
    # Longest silence while waiting for an upstream's headers or its next body bytes (504 before
    # the response starts). SSE endpoints send keep-alive comments well within it.
    upstream_read_timeout_s: float = 120.0
    # Open connections kept to the upstreams, in total.
    upstream_pool_size: int = Field(default=512, ge=1)

    # Seconds the user service's public keys are cached (refreshed early on an unknown kid).
    jwks_ttl_s: float = 300
    # Seconds an API key's verification is cached in Redis (revocation clears it at once).
    api_key_cache_ttl_s: int = 30

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value
