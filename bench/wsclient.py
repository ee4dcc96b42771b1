"""A lean WebSocket client (RFC 6455, client side) for thousands of subscribers in one process.

It does only what the fan-out benchmark needs, cheaply: the handshake, masked text frames out,
unmasked frames in (text, ping → pong, close), and per message a callback. Envelope deliveries are
recognised and timed without parsing JSON (the producer's ``"t":<monotonic ns>`` field is read with a
byte search), so the client side stays far cheaper than the server under test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable

_STAMP = b'"t":'


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + _mask(payload)


class Deliveries:
    """Shared by all clients of a round: how many envelopes arrived and their latencies (sampled)."""

    def __init__(self, sample_every: int = 1) -> None:
        self.count = 0
        self.latencies_ns: list[int] = []
        self._every = max(1, sample_every)

    def record(self, data: bytes) -> None:
        self.count += 1
        if self.count % self._every:
            return
        at = data.find(_STAMP)
        if at < 0:
            return
        end = at + 4
        while end < len(data) and 48 <= data[end] <= 57:
            end += 1
        self.latencies_ns.append(time.monotonic_ns() - int(data[at + 4 : end]))


class WsClient(asyncio.Protocol):
    def __init__(self, on_control: Callable[[bytes], None]) -> None:
        self.deliveries: Deliveries | None = None  # set while a round runs
        self._on_control = on_control
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._handshaken = False
        self._partial = bytearray()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def send_text(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(0x1, data))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(0x8, struct.pack("!H", 1000)))
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._handshaken:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buf[: self._buf.find(b"\r\n")])
            del self._buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                return
            self._handshaken = True
            self.opened.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._message(b0 & 0x0F, bool(b0 & 0x80), payload)
        del buf[:pos]

    def _message(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == 0x9:  # ping
            if self._transport is not None:
                self._transport.write(frame(0xA, payload))
            return
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(code)
            if self._transport is not None:
                self._transport.close()
            return
        if opcode in (0x1, 0x2, 0x0):
            self._partial += payload
            if not fin:
                return
            data = bytes(self._partial)
            self._partial.clear()
            if self.deliveries is not None and _STAMP in data:
                self.deliveries.record(data)
            else:
                self._on_control(data)


async def connect(
    host: str, port: int, path: str, on_control: Callable[[bytes], None], timeout_s: float = 30
) -> WsClient:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        transport, client = await loop.create_connection(lambda: WsClient(on_control), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    async with asyncio.timeout(timeout_s):
        await client.opened
    return client
