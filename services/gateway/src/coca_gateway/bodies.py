"""Bodies through the relay: the client's request body read from ASGI (whole or streamed up), and a
peer's response body sent down chunk by chunk as it arrives (SSE included), never buffered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from coca_platform.errors import PayloadTooLarge
from starlette.types import Receive, Send


class ClientGone(Exception):
    """The client disconnected (while its body was read, or during a streamed response)."""


class BodyFeed:
    """Reads the client's body from ASGI ``receive``; remembers why a relay of it failed."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.done = False
        self.streaming = False
        self._failure: BaseException | None = None

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        self.done = not message.get("more_body", False)
        body: bytes = message.get("body", b"")
        return body

    async def read_all(self) -> bytes:
        parts = []
        while not self.done:
            parts.append(await self._next())
        return b"".join(parts)

    async def stream(self) -> AsyncIterator[bytes]:
        self.streaming = True
        try:
            while not self.done:
                chunk = await self._next()
                if chunk:
                    yield chunk
        except (PayloadTooLarge, ClientGone) as exc:  # aiohttp wraps errors of a body it writes
            self._failure = exc
            raise

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def wait_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


async def stream_response_body(resp: aiohttp.ClientResponse, send: Send, feed: BodyFeed) -> None:
    """Relay the body as it arrives. For open-ended bodies (SSE) also watch for the client leaving,
    and then close the upstream response so the peer stops producing."""
    watcher = None
    open_ended = resp.content_length is None or resp.content_type == "text/event-stream"
    if open_ended and (feed.done or not feed.streaming):
        watcher = asyncio.create_task(feed.wait_disconnect())
        watcher.add_done_callback(lambda task: None if task.cancelled() else resp.close())
    try:
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except aiohttp.ClientError:
        if watcher is not None and watcher.done():
            raise ClientGone from None
        raise
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
    if watcher is not None and watcher.done():
        raise ClientGone
    await send({"type": "http.response.body", "body": b"", "more_body": False})
