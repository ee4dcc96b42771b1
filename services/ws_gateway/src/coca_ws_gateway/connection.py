"""One client connection: its bounded send queue and writer, and its half of the protocol.

Client → server: ``{"type": "auth", "token"}`` (first message, unless ``?token=``),
``{"type": "subscribe", "conversation_id", "after"?}``, ``{"type": "unsubscribe", "conversation_id"}``,
``{"type": "ping"}``, ``{"type": "pong"}``.
Server → client: ``authenticated``, ``subscribed``, ``unsubscribed``, ``pong``, ``ping`` (every
``WS_HEARTBEAT_S``), ``error`` (``code``, ``message``, maybe ``conversation_id``) and the envelopes
themselves, byte for byte as the agent produced them.

Close codes: 4401 authentication failed, 1009 message too big, 1013 too slow (send queue overflowed)
or authentication temporarily unavailable, 1011 server error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from coca_platform.errors import CocaError, NotFound, Unauthenticated
from coca_platform.identity import Identity
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from coca_ws_gateway.hub import Subscription, seq_at
from coca_ws_gateway.metrics import SLOW_CLIENTS_DROPPED
from coca_ws_gateway.resources import Resources

log = logging.getLogger(__name__)

_MAX_ID_LEN = 200
_CLOSE_TIMEOUT_S = 5.0


def frame(type_: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": type_, **fields})


def error_frame(code: str, message: str, **fields: Any) -> bytes:
    return frame("error", code=code, message=message, **fields)


class Connection:
    """The send side: a bounded queue drained by one writer task. Implements ``hub.Sink``."""

    def __init__(self, ws: WebSocket, queue_max: int) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(queue_max)
        self.closing = asyncio.Event()
        self.close_code, self.close_reason = 1000, ""

    def offer(self, data: bytes) -> bool:
        if self.closing.is_set():
            return False
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            SLOW_CLIENTS_DROPPED.inc()
            log.warning("slow websocket client disconnected", extra={"data": {"queued": self._queue.qsize()}})
            self.close(1013, "too slow")
            return False
        return True

    async def put(self, data: bytes) -> None:
        if not self.closing.is_set():
            await self._queue.put(data)

    def close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()

    async def write_forever(self) -> None:
        while True:
            data = await self._queue.get()
            await self._ws.send({"type": "websocket.send", "text": data.decode()})


def _payload(message: Any, limit: int) -> bytes | None:
    """The bytes of a received message; None when it is over ``limit``."""
    text = message.get("text")
    data = text.encode() if text is not None else (message.get("bytes") or b"")
    return None if len(data) > limit else data


async def authenticate(ws: WebSocket, res: Resources) -> Identity | None:
    """``?token=`` or a first ``auth`` message; on failure the socket is closed and None returned."""
    token = ws.query_params.get("token")
    if token is None:
        try:
            message = await asyncio.wait_for(ws.receive(), res.settings.ws_auth_timeout_s)
        except TimeoutError:
            return await _refused(ws, "unauthenticated", "authentication timed out", 4401)
        if message["type"] == "websocket.disconnect":
            return None
        raw = _payload(message, res.settings.ws_max_message_bytes)
        if raw is None:
            return await _refused(ws, "payload_too_large", "message too big", 1009)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or doc.get("type") != "auth" or not isinstance(doc.get("token"), str):
            return await _refused(
                ws, "unauthenticated", 'authenticate first: {"type": "auth", "token": ...}', 4401
            )
        token = doc["token"]
    try:
        return await res.auth.authenticate(token)
    except Unauthenticated as exc:
        return await _refused(ws, "unauthenticated", exc.message, 4401, reason=exc.code)
    except CocaError as exc:  # the user service or Redis is unavailable: try again later
        log.warning("websocket authentication unavailable", extra={"data": {"error": exc.code}})
        return await _refused(ws, exc.code, exc.message, 1013)


async def _refused(ws: WebSocket, code: str, message: str, close_code: int, **fields: Any) -> Identity | None:
    """Send an error frame and close; the value to return from ``authenticate`` (None)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.send({"type": "websocket.send", "text": error_frame(code, message, **fields).decode()})
        await ws.close(close_code, message[:120])
    return None


class Session:
    """The receive side and the subscriptions of one authenticated connection."""

    def __init__(self, ws: WebSocket, res: Resources, identity: Identity) -> None:
        self._ws, self._res, self.identity = ws, res, identity
        self._settings = res.settings
        self.conn = Connection(ws, res.settings.ws_send_queue_max)
        self._subs: dict[str, Subscription] = {}

    async def run(self) -> None:
        self.conn.offer(
            frame("authenticated", tenant_id=self.identity.tenant_id, user_id=self.identity.user_id)
        )
        tasks = [
            asyncio.create_task(self.conn.write_forever()),
            asyncio.create_task(self._read_forever()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self.conn.closing.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and isinstance(task.exception(), Exception):
                    exc = task.exception()
                    if not isinstance(exc, WebSocketDisconnect | OSError):
                        log.error("websocket session failed", exc_info=exc)
                        self.conn.close(1011, "server error")
        finally:
            for sub in self._subs.values():
                self._res.hub.remove(sub)
                sub.cancel()
            self._subs.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.conn.closing.is_set():
            # Waits for the client to read what is ahead of the close frame, at most _CLOSE_TIMEOUT_S.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
                await asyncio.wait_for(
                    self._ws.close(self.conn.close_code, self.conn.close_reason), _CLOSE_TIMEOUT_S
                )

    async def _heartbeat(self) -> None:
        ping = frame("ping")
        while True:
            await asyncio.sleep(self._settings.ws_heartbeat_s)
            self.conn.offer(ping)

    async def _read_forever(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = _payload(message, self._settings.ws_max_message_bytes)
            if raw is None:
                self.conn.close(1009, "message too big")
                return
            await self._handle(raw)

    async def _handle(self, raw: bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.conn.offer(error_frame("bad_request", "message is not valid JSON"))
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "ping":
            self.conn.offer(frame("pong"))
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self._subscribe(msg)
        elif kind == "unsubscribe":
            self._unsubscribe(msg)
        elif kind == "auth":
            self.conn.offer(error_frame("bad_request", "already authenticated"))
        else:
            self.conn.offer(
                error_frame("bad_request", "unknown message type; expected subscribe, unsubscribe or ping")
            )

    async def _subscribe(self, msg: dict[str, Any]) -> None:
        cid, after = msg.get("conversation_id"), msg.get("after")
        if not isinstance(cid, str) or not 0 < len(cid) <= _MAX_ID_LEN:
            self.conn.offer(error_frame("invalid_argument", "conversation_id must be a non-empty string"))
            return
        if after is not None and (not isinstance(after, str) or len(after) > _MAX_ID_LEN):
            self.conn.offer(error_frame("invalid_argument", "after must be an event id", conversation_id=cid))
            return
        if cid not in self._subs and len(self._subs) >= self._settings.ws_max_subscriptions:
            self.conn.offer(
                error_frame(
                    "too_many_subscriptions",
                    f"at most {self._settings.ws_max_subscriptions} subscriptions",
                    conversation_id=cid,
                )
            )
            return
        eventlog = self._res.eventlog
        try:
            await eventlog.check_owner(cid, self.identity.tenant_id)
            position = await eventlog.position(cid, after)
            last_seq = await seq_at(eventlog, cid, position)
        except NotFound as exc:
            self.conn.offer(error_frame("not_found", exc.message, conversation_id=cid))
            return
        except (RedisError, OSError):
            self.conn.offer(error_frame("unavailable", "event log unavailable", conversation_id=cid))
            return
        self._drop(cid)
        sub = Subscription(
            self.conn,
            eventlog,
            conversation_id=cid,
            tenant_id=self.identity.tenant_id,
            position=position,
            last_seq=last_seq,
            replay_batch=self._settings.ws_replay_batch,
            max_buffer=self._settings.ws_send_queue_max,
            on_failed=self._failed,
        )
        self._res.hub.add(sub)  # live events buffer from here on; the replay below fills in before them
        self._subs[cid] = sub
        self.conn.offer(frame("subscribed", conversation_id=cid))
        sub.start()

    def _unsubscribe(self, msg: dict[str, Any]) -> None:
        cid = msg.get("conversation_id")
        if not isinstance(cid, str) or cid not in self._subs:
            self.conn.offer(
                error_frame(
                    "not_found",
                    "not subscribed to this conversation",
                    conversation_id=cid if isinstance(cid, str) else None,
                )
            )
            return
        self._drop(cid)
        self.conn.offer(frame("unsubscribed", conversation_id=cid))

    def _drop(self, cid: str) -> None:
        sub = self._subs.pop(cid, None)
        if sub is not None:
            self._res.hub.remove(sub)
            sub.cancel()

    def _failed(self, sub: Subscription, exc: Exception) -> None:
        log.warning("websocket replay failed", extra={"data": {"error": type(exc).__name__}})
        if self._subs.get(sub.conversation_id) is sub:
            self._drop(sub.conversation_id)
            self.conn.offer(
                error_frame(
                    "unavailable",
                    "event log unavailable; subscribe again",
                    conversation_id=sub.conversation_id,
                )
            )
