"""A bare ``websockets`` broadcast loop fed from memory: the anchor of the fan-out scenario.

``python -m bench.anchors.ws_broadcast --port P``. Speaks the subset of Coca's ``/ws`` protocol the
benchmark uses: it greets with ``authenticated``, answers ``subscribe`` with ``subscribed``; a
``{"type": "run", "rate", "duration", "conversations"}`` message makes it generate envelopes of the
same shape as the agent's, round-robin over the conversations at ``rate`` events/s, each stamped
with ``"t": <monotonic ns>`` and sent with ``websockets.broadcast`` to that conversation's
subscribers; it answers ``done`` with the count.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

_SUBS: dict[str, set[ServerConnection]] = {}
_MAX_EVENTS = 10_000_000


def envelope(conversation: str, tenant: str, run_id: str, seq: int) -> str:
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "message.delta",
            "version": 1,
            "source": "agent",
            "time": "2026-01-01T00:00:00.000000Z",
            "tenant_id": tenant,
            "subject": conversation,
            "data": {"run_id": run_id, "text": f" tok{seq}", "t": time.monotonic_ns()},
            "seq": seq,
        }
    ).decode()


async def _generate(ws: ServerConnection, rate: float, duration: float, conversations: list[str]) -> None:
    tenant, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    total = min(_MAX_EVENTS, max(1, int(rate * duration)))
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            cid = conversations[sent % len(conversations)]
            broadcast(_SUBS.get(cid, ()), envelope(cid, tenant, run_id, sent + 1))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await ws.send(orjson.dumps({"type": "done", "events": sent}).decode())


async def handler(ws: ServerConnection) -> None:
    mine: list[str] = []
    await ws.send('{"type":"authenticated"}')
    try:
        async for message in ws:
            msg: dict[str, Any] = orjson.loads(message)
            if msg.get("type") == "subscribe":
                cid = str(msg["conversation_id"])
                _SUBS.setdefault(cid, set()).add(ws)
                mine.append(cid)
                await ws.send(orjson.dumps({"type": "subscribed", "conversation_id": cid}).decode())
            elif msg.get("type") == "run":
                asyncio.get_running_loop().create_task(
                    _generate(ws, float(msg["rate"]), float(msg["duration"]), list(msg["conversations"]))
                )
    finally:
        for cid in mine:
            _SUBS.get(cid, set()).discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, max_queue=None, compression=None, backlog=4096) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.anchors.ws_broadcast")
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(main(parser.parse_args().port))
