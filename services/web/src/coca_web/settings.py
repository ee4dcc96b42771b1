"""Web service settings (environment variables, case-insensitive; defaults suit ``make dev``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from coca_platform.settings import PlatformSettings
from pydantic import field_validator

DEV_GATEWAY_URL = "http://127.0.0.1:8080"


class Settings(PlatformSettings):
    service_name: str = "web"
    http_port: int = 3000

    # The gateway's URL as the browser reaches it; pages call the public API there directly (CORS).
    # Empty: the gateway is served on the same origin as the pages (an ingress routes /v1 to it).
    gateway_public_url: str = DEV_GATEWAY_URL

    @field_validator("gateway_public_url")
    @classmethod
    def _origin_only(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        if not text:
            return ""
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.example.com, or empty")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry credentials, a query or a fragment")
        return text

    @property
    def gateway_origin(self) -> str:
        """``scheme://host[:port]`` of the gateway (what the content security policy allows), or ''."""
        if not self.gateway_public_url:
            return ""
        parts = urlsplit(self.gateway_public_url)
        return f"{parts.scheme}://{parts.netloc}"

    def check_production(self) -> None:
        super().check_production()
        if self.environment in ("staging", "prod") and self.gateway_public_url == DEV_GATEWAY_URL:
            raise SystemExit("GATEWAY_PUBLIC_URL must be set outside local/test environments")
