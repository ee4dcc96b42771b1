"""What the web service holds while it runs: its settings, the page templates and the static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from coca_web.assets import AssetStore
from coca_web.settings import Settings


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    templates: Environment
    assets: AssetStore

    def render(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(
            gateway_url=self.settings.gateway_public_url, static=self.assets.url, **context
        )


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    templates = Environment(
        loader=PackageLoader("coca_web", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,  # a missing variable is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )
    yield Resources(settings, templates, AssetStore.load("coca_web"))
