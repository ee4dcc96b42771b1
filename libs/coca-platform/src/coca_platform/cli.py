"""``python -m coca_<svc> [serve|migrate]``: the one entry point shape of every service."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from coca_platform.observability import configure_logging, configure_telemetry
from coca_platform.settings import PlatformSettings

log = logging.getLogger(__name__)


def run_service(
    settings_factory: Callable[[], PlatformSettings],
    app_factory: Callable[[Any], Any],
    *,
    migrations: tuple[str, str] | None = None,
    serve_options: Callable[[Any], dict[str, Any]] | None = None,
    argv: list[str] | None = None,
) -> None:
    """Build settings from the environment, configure logging and telemetry, then serve or migrate.

    ``migrations`` is ``(schema, package)`` for services that own a PostgreSQL schema;
    ``serve_options(settings)`` gives extra uvicorn options (WebSocket ping interval, frame size).
    """
    parser = argparse.ArgumentParser(prog=f"python -m {app_factory.__module__.split('.')[0]}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = settings_factory()
    except ValidationError as exc:
        raise SystemExit(f"invalid configuration:\n{exc}") from None
    settings.check_production()
    configure_logging(settings)
    configure_telemetry(settings)
    if args.command == "migrate":
        if migrations is None:
            log.info("no migrations for this service")
            return
        from coca_platform.db import migrate_dsn

        schema, package = migrations
        applied = asyncio.run(migrate_dsn(settings.database_url, schema=schema, package=package))  # type: ignore[attr-defined]
        log.info("migrate finished", extra={"data": {"schema": schema, "applied": applied}})
        return
    from coca_platform.web import serve

    log.info("service starting", extra={"data": {"port": settings.http_port, "env": settings.environment}})
    serve(app_factory(settings), settings, **(serve_options(settings) if serve_options else {}))
