"""``python -m coca_user [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_user.app import create_app
from coca_user.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_user", "coca_user"))


if __name__ == "__main__":
    main()
