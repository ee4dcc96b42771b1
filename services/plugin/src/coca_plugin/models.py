"""Domain types of the plugin service: plugins, their tools, and tool ids. No I/O here.

A tool id is ``<plugin name>__<tool name>`` (``weather__get_forecast``): stable while the plugin
exists, unique in a tenant, and a valid OpenAI function name (``^[A-Za-z0-9_-]{1,64}$``), so it is
both what an agent lists in ``tools`` and the function name the LLM calls. Plugin names have no
underscore, so the first ``__`` always ends the plugin name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

PLUGIN_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,29}$")
ID_SEPARATOR = "__"


def tool_id(plugin_name: str, tool_name: str) -> str:
    return f"{plugin_name}{ID_SEPARATOR}{tool_name}"


def split_tool_id(value: str) -> tuple[str, str] | None:
    """``(plugin name, tool name)`` of a well-formed tool id, else ``None``."""
    plugin, sep, tool = value.partition(ID_SEPARATOR)
    if not sep or not PLUGIN_NAME.match(plugin) or not TOOL_NAME.match(tool):
        return None
    return plugin, tool


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema of type object
    endpoint_url: str
    method: str = "POST"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "endpoint_url": self.endpoint_url,
            "method": self.method,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ToolSpec:
        return cls(
            name=value["name"],
            description=value["description"],
            parameters=value["parameters"],
            endpoint_url=value["endpoint_url"],
            method=value.get("method", "POST"),
        )


@dataclass(frozen=True, slots=True)
class Plugin:
    id: UUID
    tenant_id: UUID
    name: str
    description: str
    tools: tuple[ToolSpec, ...]
    secret_ciphertext: str | None  # the tool endpoints' bearer token, encrypted (SecretBox)
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def has_secret(self) -> bool:
        return self.secret_ciphertext is not None

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)


@dataclass(frozen=True, slots=True)
class PluginDraft:
    """What a caller registers (validated at the edge; the secret still in plaintext)."""

    name: str
    description: str
    tools: tuple[ToolSpec, ...]
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class PluginChanges:
    """A partial update; ``None`` leaves a field alone. ``secret``: a new value, or ``clear_secret``."""

    description: str | None = None
    tools: tuple[ToolSpec, ...] | None = None
    secret: str | None = None
    clear_secret: bool = False


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """What a tool endpoint answered."""

    status: int
    body: bytes
    content_type: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class PluginEventType(StrEnum):
    INSTALLED = "plugin.installed"
    UPDATED = "plugin.updated"
    REMOVED = "plugin.removed"
