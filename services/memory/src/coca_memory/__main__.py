"""``python -m coca_memory [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_memory.app import create_app
from coca_memory.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_memory", "coca_memory"))


if __name__ == "__main__":
    main()
