"""Server-sent event responses (plain ASGI on the hot path: frames are sent as built, never re-encoded).

- ``RunStream`` relays the frames of a run started by this request; it ends after the terminal
  event. A client that goes away stops the relay only: the run goes on and its events stay in the
  log for replay.
- ``ReplayStream`` sends a conversation's logged events after a cursor, then follows the log live
  until a terminal event (``run.completed``/``run.failed``) with nothing newer.

Both send a ``: ping`` comment while idle, so proxies keep the connection open.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import orjson
from coca_platform.eventlog import EventLog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from coca_agent.events import TERMINAL_TYPES, sse_frame
from coca_agent.registry import RunHandle

PING = b": ping\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer
]
_REPLAY_BATCH = 500


class _EventStream(Response):
    """Streams ``body(write)`` until it returns or the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self) -> None:  # no body: __call__ writes it
        self.status_code = 200
        self.background = None

    @abc.abstractmethod
    async def body_frames(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Write the stream's frames (each subclass: a run's live frames, or the event log's replay)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})

        async def write(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        body = asyncio.ensure_future(self.body_frames(write))
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({body, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body, watch):
                task.cancel()
            await asyncio.gather(body, watch, return_exceptions=True)
        if body.done() and not body.cancelled():
            body.result()  # a bug in the relay surfaces here
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class RunStream(_EventStream):
    def __init__(self, handle: RunHandle, heartbeat_s: float) -> None:
        super().__init__()
        assert handle.frames is not None
        self._frames = handle.frames
        self._task = handle.task
        self._heartbeat_s = heartbeat_s

    async def body_frames(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        while True:
            try:
                async with asyncio.timeout(self._heartbeat_s):
                    frame = await self._frames.get()
            except TimeoutError:
                if self._task.done() and self._frames.empty():
                    return  # the run ended without a terminal event (it crashed): end the stream
                await write(PING)
                continue
            await write(frame.data)
            if frame.terminal:
                return


class ReplayStream(_EventStream):
    def __init__(self, log: EventLog, conversation_id: str, position: str, heartbeat_s: float) -> None:
        super().__init__()
        self._log, self._subject, self._position = log, conversation_id, position
        self._heartbeat_ms = int(heartbeat_s * 1000)

    async def body_frames(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        position = self._position
        while True:  # the backlog first
            batch = await self._log.read_after(self._subject, position, count=_REPLAY_BATCH)
            if not batch:
                break
            position = batch[-1][0]
            if await _send_batch(batch, write) and len(batch) < _REPLAY_BATCH:
                return
        follow = self._log.follow(self._subject, position, block_ms=self._heartbeat_ms, count=_REPLAY_BATCH)
        async with aclosing(follow) as batches:  # type: ignore[type-var]  # an async generator
            async for batch in batches:
                if not batch:
                    await write(PING)
                elif await _send_batch(batch, write) and len(batch) < _REPLAY_BATCH:
                    return


async def _send_batch(batch: list[tuple[str, bytes]], write: Callable[[bytes], Awaitable[None]]) -> bool:
    """Send logged envelopes; True when the last one ends a run."""
    frames = []
    last_type = ""
    for _, raw in batch:
        envelope = orjson.loads(raw)
        last_type = envelope["type"]
        frames.append(sse_frame(envelope["id"], last_type, raw))
    await write(b"".join(frames))
    return last_type in TERMINAL_TYPES
