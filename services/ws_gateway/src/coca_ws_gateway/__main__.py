from __future__ import annotations

from typing import Any

from coca_platform.cli import run_service

from coca_ws_gateway.app import create_app
from coca_ws_gateway.settings import Settings


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    # WebSocket-level pings at the heartbeat interval; frames over the limit are refused by the server
    # (the connection handler still closes with 1009 for anything that reaches it).
    return {
        "ws_ping_interval": settings.ws_heartbeat_s,
        "ws_ping_timeout": settings.ws_heartbeat_s,
        "ws_max_size": settings.ws_max_message_bytes,
    }


def main() -> None:
    run_service(Settings, create_app, serve_options=_uvicorn_options)


if __name__ == "__main__":
    main()
