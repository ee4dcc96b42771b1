"""``python -m coca_plugin [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_plugin.app import create_app
from coca_plugin.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_plugin", "coca_plugin"))


if __name__ == "__main__":
    main()
