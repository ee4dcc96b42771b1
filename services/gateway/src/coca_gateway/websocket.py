"""``/ws`` relay: the client's ASGI WebSocket <-> an aiohttp WebSocket to ws_gateway.

The upstream handshake happens first, so a refused or unreachable ws_gateway refuses the client's
handshake too (HTTP 403 from the server). Then frames are relayed both ways, text as text and bytes
as bytes, until either side closes; its close code (and reason) is passed on to the other side.
ws_gateway authenticates the connection itself (``?token=`` or an auth message); the query string is
kept. No ``X-Coca-*`` header from the client reaches it.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from multidict import CIMultiDict
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _sendable(code: int | None) -> int:
    """Close codes a peer may put in a close frame (1005/1006/1015 are reserved for reporting)."""
    if code is None or code in (1005, 1006, 1015):
        return 1000 if code in (None, 1005) else 1011
    return code if 1000 <= code <= 1014 or 3000 <= code <= 4999 else 1011


async def relay_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    http: aiohttp.ClientSession,
    url: str,
    headers: CIMultiDict[str],
) -> int:
    """Relay one WebSocket connection; returns an HTTP-like status for the access log."""
    connect = await receive()
    if connect["type"] != "websocket.connect":
        return 499
    headers.popall("sec-websocket-key", None)
    headers.popall("sec-websocket-version", None)
    headers.popall("sec-websocket-extensions", None)
    headers.popall("sec-websocket-protocol", None)
    try:
        upstream = await http.ws_connect(
            url,
            headers=headers,
            protocols=tuple(scope.get("subprotocols") or ()),
            timeout=_CONNECT_TIMEOUT,
            max_msg_size=_MAX_MESSAGE_BYTES,
            autoping=True,
        )
    except aiohttp.WSServerHandshakeError as exc:
        await send({"type": "websocket.close", "code": 1008})
        return exc.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("upstream unavailable", extra={"data": {"upstream": "ws_gateway", "error": repr(exc)}})
        await send({"type": "websocket.close", "code": 1011})
        return 503
    async with upstream:
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
        to_client = asyncio.create_task(_downstream(upstream, send))
        to_upstream = asyncio.create_task(_upstream(receive, upstream))
        try:
            await asyncio.wait((to_client, to_upstream), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_client, to_upstream):
                task.cancel()
            await asyncio.gather(to_client, to_upstream, return_exceptions=True)
    return 101


async def _upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Client -> ws_gateway, until the client disconnects (its close code goes upstream)."""
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await upstream.send_str(message["text"])
            else:
                await upstream.send_bytes(message.get("bytes") or b"")
        elif message["type"] == "websocket.disconnect":
            await upstream.close(
                code=_sendable(message.get("code")), message=(message.get("reason") or "").encode()
            )
            return


async def _downstream(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    """ws_gateway -> client, until ws_gateway closes (its close code and reason go to the client)."""
    reason = ""
    while True:
        message = await upstream.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": message.data})
        elif message.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": message.data})
        else:  # CLOSE (data: code, extra: reason), CLOSING, CLOSED or ERROR
            if message.type == aiohttp.WSMsgType.CLOSE and isinstance(message.extra, str):
                reason = message.extra
            break
    await send({"type": "websocket.close", "code": _sendable(upstream.close_code), "reason": reason})
