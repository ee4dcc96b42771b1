"""Header rewriting between the public edge and the peers, and the request id every hop shares.

Toward a peer: hop-by-hop headers, ``Host`` and every client-sent ``X-Coca-*`` header (identity above
all) are dropped; ``X-Request-ID``, ``X-Forwarded-For/-Proto/-Host`` are set by the gateway, and the
signed identity is added by the caller. Toward the client: hop-by-hop headers and the peer's own
``Server``/``Date``/``X-Request-ID``/CORS headers are dropped (the gateway sets its own).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from multidict import CIMultiDict
from starlette.types import ASGIApp, Receive, Scope, Send

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_SET_BY_GATEWAY = frozenset(
    {
        b"host",
        b"expect",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"traceparent",  # re-injected from the gateway's own span (see proxy)
        b"tracestate",
    }
)
_DROP_REQUEST = HOP_BY_HOP | _SET_BY_GATEWAY
_DROP_RESPONSE = HOP_BY_HOP | {b"server", b"date", b"x-request-id"}
# Identity headers are the gateway's to set: any a client sends is dropped. (Other X-Coca-* request
# headers are public, e.g. the webhook channels' X-Coca-Timestamp / X-Coca-Signature.)
_IDENTITY_PREFIX = b"x-coca-identity"
_INTERNAL_PREFIX = b"x-coca-"
_CORS_PREFIX = b"access-control-"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Keep a sane incoming ``X-Request-ID`` or replace it with a fresh one, so the platform's
    metrics middleware echoes the same id the peers receive."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            incoming = next((v for k, v in headers if k == b"x-request-id"), None)
            if incoming is None or _REQUEST_ID.fullmatch(incoming) is None:
                scope["headers"] = [(k, v) for k, v in headers if k != b"x-request-id"] + [
                    (b"x-request-id", uuid.uuid4().hex.encode())
                ]
        await self.app(scope, receive, send)


@dataclass(slots=True)
class Outbound:
    headers: CIMultiDict[str]
    authorization: str | None
    content_length: int | None
    chunked: bool


def client_ip(scope: Scope, trusted_hops: int) -> str:
    """The caller's address: the socket peer, or with ``trusted_hops`` proxies in front, the
    X-Forwarded-For entry those proxies vouch for."""
    peer = str(scope["client"][0]) if scope.get("client") else "unknown"
    if trusted_hops <= 0:
        return peer
    forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()] + [peer]
    return hops[max(0, len(hops) - 1 - trusted_hops)]


def outbound_headers(scope: Scope, *, trusted_hops: int, keep_authorization: bool) -> Outbound:
    """Request headers for a peer (no identity yet), plus what the proxy needs to know of them."""
    raw = scope["headers"]
    connection_tokens: set[bytes] = set()
    for name, value in raw:
        if name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
    out: CIMultiDict[str] = CIMultiDict()
    request_id = ""
    authorization: str | None = None
    content_length: int | None = None
    chunked = False
    forwarded_for = ""
    host = ""
    for name, value in raw:
        if name in _DROP_REQUEST or name in connection_tokens or name.startswith(_IDENTITY_PREFIX):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"x-forwarded-for" and trusted_hops > 0:
                forwarded_for = (
                    f"{forwarded_for}, {value.decode('latin-1')}"
                    if forwarded_for
                    else value.decode("latin-1")
                )
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
            continue
        text = value.decode("latin-1")
        if name == b"authorization":
            authorization = text
            if not keep_authorization:
                continue
        elif name == b"content-length":
            content_length = int(text) if text.isdigit() else None
        out.add(name.decode("latin-1"), text)
    peer = str(scope["client"][0]) if scope.get("client") else "unknown"
    out["x-forwarded-for"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    out["x-forwarded-proto"] = "https" if scope.get("scheme") in ("https", "wss") else "http"
    if host:
        out["x-forwarded-host"] = host
    out["x-request-id"] = request_id or uuid.uuid4().hex
    return Outbound(out, authorization, content_length, chunked)


def inbound_headers(raw: tuple[tuple[bytes, bytes], ...], remaining: int | None) -> list[tuple[bytes, bytes]]:
    """A peer's response headers as the client gets them (ASGI form, lower-case names)."""
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower in _DROP_RESPONSE or lower.startswith(_CORS_PREFIX) or lower.startswith(_INTERNAL_PREFIX):
            continue
        out.append((lower, value))
    if remaining is not None:
        out.append((b"x-ratelimit-remaining", str(remaining).encode()))
    return out
