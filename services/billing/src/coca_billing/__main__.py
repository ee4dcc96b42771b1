"""``python -m coca_billing [serve|migrate]``."""

from __future__ import annotations

from coca_platform.cli import run_service

from coca_billing.app import create_app
from coca_billing.settings import Settings


def main() -> None:
    run_service(Settings, create_app, migrations=("coca_billing", "coca_billing"))


if __name__ == "__main__":
    main()
