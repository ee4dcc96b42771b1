"""Writes docs/configuration.md from the services' Settings classes (their fields, defaults and the
comments above each field). `make docs` runs it; CI fails if the committed page is stale."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings

SERVICES = ["gateway", "ws_gateway", "user", "agent", "channel", "memory", "billing", "plugin", "web"]
HEADER = """# Configuration reference

Every service reads its settings from environment variables (case-insensitive); `make dev` sets
them for all services. Secrets are never logged. This page is generated from the code by
`make docs` — edit the comments in the `settings.py` files, not this page.
"""


def _comments(cls: type) -> dict[str, str]:
    """The comment lines directly above each field of ``cls`` (and inline ``# ...`` after it)."""
    found: dict[str, str] = {}
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return found
    pending: list[str] = []
    group = ""  # a comment above several adjacent fields describes each of them
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# ").strip())
            continue
        if not text:
            group, pending = "", []
            continue
        name = (
            text.split(":", 1)[0].strip() if ":" in text and not text.startswith(("@", "def ", '"')) else ""
        )
        if name.isidentifier():
            inline = text.split("  # ", 1)[1].strip() if "  # " in text else ""
            group = " ".join(pending).strip() or group
            found[name] = " ".join(p for p in (group, inline) if p)
        pending = []
    return found


def _describe(settings_cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    docs: dict[str, str] = {}
    for klass in reversed(settings_cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseSettings):
            docs.update({k: v for k, v in _comments(klass).items() if v})
    rows = []
    for name, field in settings_cls.model_fields.items():
        if name == "service_name":
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            shown = "(development default)" if default.get_secret_value() else "(empty)"
        elif default is None:
            shown = "(unset)"
        else:
            shown = f"`{default}`"
        env = name.upper()
        alias = field.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            env = " / ".join(str(c).upper() for c in alias.choices)
        rows.append((env, shown, docs.get(name, "")))
    return rows


def render() -> str:
    out = [HEADER]
    for service in SERVICES:
        module = importlib.import_module(f"coca_{service}.settings")
        rows = _describe(module.Settings)
        out.append(f"\n## {service}\n\n| variable | default | meaning |\n|---|---|---|")
        out += [f"| `{env}` | {default} | {doc} |" for env, default, doc in rows]
    return "\n".join(out) + "\n"


def main() -> None:
    target = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    text = render()
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            raise SystemExit("docs/configuration.md is stale: run 'make docs' and commit")
        return
    target.write_text(text)


if __name__ == "__main__":
    main()
