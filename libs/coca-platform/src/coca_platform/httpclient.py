"""Outbound HTTP between services: one tuned aiohttp session per process, and a typed JSON call.

``open_http_session`` gives a pooled keep-alive ``aiohttp.ClientSession`` (opened and closed by a
service's lifespan). ``request_json`` calls a peer and maps failures onto :mod:`coca_platform.errors`:
a peer's ``{"error": {"code", "message"}}`` becomes the same ``CocaError`` class (via
``errors.from_http_status``), a connection failure becomes ``Unavailable`` and a timeout
``DeadlineExceeded``, so a caller's own edge renders them with the right status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import aiohttp
import orjson
from pydantic import TypeAdapter, ValidationError

from coca_platform.errors import (
    CocaError,
    DeadlineExceeded,
    QuotaExceeded,
    Unavailable,
    from_http_status,
)

T = TypeVar("T")

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def service_url(addr: str) -> str:
    """A peer's base URL from a ``*_SERVICE_ADDR`` value: ``host:port`` or ``http(s)://host:port``."""
    addr = addr.strip().rstrip("/")
    return addr if "://" in addr else f"http://{addr}"


@asynccontextmanager
async def open_http_session(
    *,
    timeout_s: float = 10.0,
    limit: int = 100,
    connect_timeout_s: float | None = 3.0,
    keepalive_s: float = 30.0,
    auto_decompress: bool = True,
) -> AsyncIterator[aiohttp.ClientSession]:
    """A pooled session for service-to-service calls.

    ``limit`` caps open connections (per peer as well); idle ones are kept ``keepalive_s``.
    ``timeout_s`` is the default total time of one call; a proxy passes its own per-request timeout.
    ``auto_decompress=False`` keeps bodies byte-for-byte (a proxy relays ``Content-Encoding`` as is).
    """
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit, keepalive_timeout=keepalive_s, ttl_dns_cache=60
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s),
        auto_decompress=auto_decompress,
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        raise_for_status=False,
        trust_env=False,
    )
    try:
        yield session
    finally:
        await session.close()


def peer_error(status: int, body: bytes, *, peer: str, retry_after: str | None = None) -> CocaError:
    """The ``CocaError`` for a peer's error response (its own code and message when it sent ours)."""
    code: str | None = None
    message = f"{peer} answered HTTP {status}"
    try:
        error = orjson.loads(body).get("error")
        if isinstance(error, dict):
            code = str(error["code"]) if error.get("code") else None
            message = str(error.get("message") or message)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    exc = from_http_status(status, message, code)
    if isinstance(exc, QuotaExceeded) and retry_after and retry_after.isdigit():
        exc.retry_after = int(retry_after)
    return exc


@overload
async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    peer: str,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    model: None = None,
) -> Any: ...


@overload
async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    peer: str,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    model: type[T],
) -> T: ...


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    peer: str,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    model: type[T] | None = None,
) -> Any:
    """Call a peer with a JSON body (or none) and return its decoded JSON (validated into ``model``).

    ``peer`` names the service in error messages. Non-2xx answers raise the mapped ``CocaError``.
    """
    extra: dict[str, Any] = {} if timeout_s is None else {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
    data = orjson.dumps(json) if json is not None else None
    all_headers = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    try:
        async with session.request(method, url, data=data, headers=all_headers, **extra) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise peer_error(resp.status, body, peer=peer, retry_after=resp.headers.get("Retry-After"))
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
        raise DeadlineExceeded(f"{peer} did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise Unavailable(f"{peer} is unavailable: {type(exc).__name__}") from exc
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise Unavailable(f"{peer} answered with invalid JSON") from exc
    if model is None:
        return decoded
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS.setdefault(model, TypeAdapter(model))
    try:
        return adapter.validate_python(decoded)
    except ValidationError as exc:
        raise Unavailable(f"{peer} answered with an unexpected shape: {exc.error_count()} errors") from exc


__all__ = ["open_http_session", "peer_error", "request_json", "service_url"]
