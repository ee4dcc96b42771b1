from __future__ import annotations

from coca_platform.settings import PlatformSettings


class Settings(PlatformSettings):
    service_name: str = "web"
    http_port: int = 3000
