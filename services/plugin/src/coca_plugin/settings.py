"""The plugin service's settings (environment variables, case-insensitive)."""

from __future__ import annotations

from coca_platform.crypto import SecretsSettings
from coca_platform.egress import EgressSettings
from coca_platform.settings import AmqpSettings, DatabaseSettings, PlatformSettings
from pydantic import Field


class Settings(PlatformSettings, DatabaseSettings, AmqpSettings, SecretsSettings, EgressSettings):
    service_name: str = "plugin"
    http_port: int = 8006

    # Longest a tool endpoint may take to answer one invocation (redirects included), in seconds.
    tool_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Largest tool response read; a longer one fails with response_too_large.
    tool_max_response_bytes: int = Field(default=256 * 1024, ge=1024)
    # Largest invocation arguments (JSON), in bytes; more is refused with 413.
    tool_max_args_bytes: int = Field(default=64 * 1024, ge=256)
    # Redirects a tool endpoint may answer with before the call fails (each hop is re-checked).
    tool_max_redirects: int = Field(default=3, ge=0, le=10)
    # Tool endpoint connections kept open by this process (all endpoints together).
    tool_max_connections: int = Field(default=100, ge=1)
    # Tools one plugin may declare.
    plugin_max_tools: int = Field(default=32, ge=1, le=256)
    # Largest JSON schema of one tool's parameters, in bytes.
    tool_max_schema_bytes: int = Field(default=16 * 1024, ge=256)
    # Plugins one tenant may register.
    plugins_per_tenant: int = Field(default=100, ge=1)
    # How long a tool definition stays in this process's cache. Changes from any replica invalidate
    # it at once through the `plugin` fanout; this bounds staleness if such an event is missed.
    tool_cache_ttl_s: float = Field(default=60.0, ge=0)
    # Plugins held in that cache (least recently used ones are dropped first).
    tool_cache_size: int = Field(default=10_000, ge=1)
