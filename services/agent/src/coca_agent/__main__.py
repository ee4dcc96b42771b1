"""``python -m coca_agent [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_agent.app import create_app
from coca_agent.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_agent", "coca_agent"))


if __name__ == "__main__":
    main()
