"""``python -m coca_channel [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_channel.app import create_app
from coca_channel.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_channel", "coca_channel"))


if __name__ == "__main__":
    main()
