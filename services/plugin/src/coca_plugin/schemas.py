"""Tool parameter schemas (JSON Schema, draft 2020-12 unless ``$schema`` says otherwise): checked
when a tool is registered, compiled once per cached plugin, and applied to every invocation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from coca_platform.errors import InvalidArgument
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

_MESSAGE_CHARS = 300


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def check_parameters_schema(tool: str, schema: dict[str, Any], *, max_bytes: int) -> None:
    """A tool's ``parameters`` must be a valid JSON Schema for an object, self-contained (only
    ``#...`` references: nothing is ever fetched), within ``max_bytes``."""
    if len(orjson.dumps(schema)) > max_bytes:
        raise InvalidArgument(f"tool {tool!r}: parameters schema exceeds {max_bytes} bytes")
    if schema.get("type") != "object":
        raise InvalidArgument(f"tool {tool!r}: parameters must be a JSON Schema with type 'object'")
    external = next((ref for ref in _refs(schema) if not ref.startswith("#")), None)
    if external is not None:
        raise InvalidArgument(f"tool {tool!r}: parameters may only reference '#...' (found {external!r})")
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidArgument(
            f"tool {tool!r}: parameters is not a valid JSON Schema at {path}: {exc.message[:_MESSAGE_CHARS]}"
        ) from exc


def compile_schema(schema: dict[str, Any]) -> Validator:
    return validator_for(schema, default=Draft202012Validator)(schema)


def validate_arguments(validator: Validator, arguments: Any) -> None:
    """``InvalidArgument`` (code ``invalid_arguments``) naming the first problem, if any."""
    try:
        error = best_match(validator.iter_errors(arguments))
    except Unresolvable as exc:  # a '#...' reference that points nowhere
        message = f"parameters schema cannot be applied: {exc}"[:_MESSAGE_CHARS]
        raise InvalidArgument(message, code="invalid_arguments") from exc
    if error is not None:
        where = error.json_path if error.absolute_path else "arguments"
        raise InvalidArgument(f"{where}: {error.message[:_MESSAGE_CHARS]}", code="invalid_arguments")
