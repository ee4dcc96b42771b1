from __future__ import annotations

from coca_platform.settings import PlatformSettings


class Settings(PlatformSettings):
    service_name: str = "gateway"
    http_port: int = 8080
