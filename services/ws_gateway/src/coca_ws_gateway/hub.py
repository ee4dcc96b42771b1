"""Subscriptions and the live dispatcher: one Kafka tail per process fans envelopes out to them.

A subscription delivers a conversation's envelopes in ``seq`` order with no gap and no duplicate
across the switch from replay to live:

1. it is registered for live events first; while it is catching up, live envelopes are buffered;
2. it replays the event log after the client's cursor (``after``), awaiting queue space;
3. it drains the buffer (skipping ``seq`` already delivered) and goes live, with no await between
   the last replay read and going live, so the dispatcher cannot interleave.

A live envelope whose ``seq`` jumps ahead (a gap) sends the subscription back to step 2 from where
its replay stopped; if the log has nothing newer, the gap is real (e.g. the log expired) and is
logged and accepted. The dispatcher never awaits: it offers frames to bounded per-connection queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from coca_platform.eventlog import EventLog
from coca_platform.kafka import Record, consume_span
from redis.exceptions import RedisError

from coca_ws_gateway.metrics import DELIVERIES

log = logging.getLogger(__name__)

_MAX_STREAM_SEQ = 18_446_744_073_709_551_615


class Sink(Protocol):
    """One client connection's send side."""

    def offer(self, frame: bytes) -> bool:
        """Queue without waiting; False (and the client is dropped) when its queue is full."""
        ...

    async def put(self, frame: bytes) -> None:
        """Queue, waiting for space (replay is paced by the client)."""
        ...


def _seq(doc: Any) -> int | None:
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if isinstance(seq, int) else None


def _previous_stream_id(sid: str) -> str:
    ms, _, n = sid.partition("-")
    return f"{ms}-{int(n) - 1}" if int(n) > 0 else f"{int(ms) - 1}-{_MAX_STREAM_SEQ}"


async def seq_at(eventlog: EventLog, subject: str, position: str) -> int:
    """The ``seq`` of the log entry at ``position`` (0 for the start of the log)."""
    if position == "0-0":
        return 0
    entries = await eventlog.read_after(subject, _previous_stream_id(position), count=1)
    if not entries or entries[0][0] != position:
        return 0
    return _seq(orjson.loads(entries[0][1])) or 0


class Subscription:
    def __init__(
        self,
        sink: Sink,
        eventlog: EventLog,
        *,
        conversation_id: str,
        tenant_id: str,
        position: str,
        last_seq: int,
        replay_batch: int,
        max_buffer: int,
        on_failed: Callable[[Subscription, Exception], None],
    ) -> None:
        self.sink, self._eventlog = sink, eventlog
        self.conversation_id, self.tenant_id = conversation_id, tenant_id
        self._position, self._last_seq = position, last_seq
        self._replay_batch, self._max_buffer = replay_batch, max_buffer
        self._on_failed = on_failed
        self._live = False
        self._buffer: list[tuple[int, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._catch_up())

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def offer_live(self, seq: int | None, raw: bytes) -> bool:
        """From the dispatcher: deliver, buffer or skip one live envelope. False if the client was dropped."""
        if seq is None:  # not from the event log: cannot be ordered, pass it on
            return self._deliver(raw, "live")
        if not self._live:
            if len(self._buffer) >= self._max_buffer:
                self._buffer.clear()  # everything buffered is in the log too; the replay picks it up
            self._buffer.append((seq, raw))
            return True
        if seq <= self._last_seq:
            return True
        if seq > self._last_seq + 1:
            self._live = False
            self._buffer.append((seq, raw))
            self.start()
            return True
        self._last_seq = seq
        return self._deliver(raw, "live")

    def _deliver(self, raw: bytes, source: str) -> bool:
        DELIVERIES.labels(source).inc()
        return self.sink.offer(raw)

    async def _catch_up(self) -> None:
        try:
            while True:
                progressed = await self._replay()
                if self._go_live(accept_gap=not progressed):
                    return
        except (RedisError, OSError) as exc:
            self._on_failed(self, exc)

    async def _replay(self) -> bool:
        progressed = False
        while True:
            entries = await self._eventlog.read_after(
                self.conversation_id, self._position, count=self._replay_batch
            )
            for sid, raw in entries:
                self._position = sid
                seq = _seq(orjson.loads(raw))
                if seq is not None and seq <= self._last_seq:
                    continue
                await self.sink.put(raw)
                DELIVERIES.labels("replay").inc()
                self._last_seq = seq if seq is not None else self._last_seq
                progressed = True
            if len(entries) < self._replay_batch:
                return progressed

    def _go_live(self, *, accept_gap: bool) -> bool:
        pending = sorted(self._buffer, key=lambda item: item[0])
        self._buffer = []
        for i, (seq, raw) in enumerate(pending):
            if seq <= self._last_seq:
                continue
            if seq > self._last_seq + 1:
                if not accept_gap:
                    self._buffer = pending[i:]
                    return False
                log.warning(
                    "gap in a conversation's events",
                    extra={
                        "data": {
                            "conversation_id": self.conversation_id,
                            "after_seq": self._last_seq,
                            "next_seq": seq,
                        }
                    },
                )
            self._last_seq = seq
            if not self._deliver(raw, "live"):
                return True
        self._live = True
        return True


class Hub:
    """This process's subscriptions by conversation id; ``dispatch`` fans Kafka records out."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        self._subs.setdefault(sub.conversation_id, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.conversation_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.conversation_id]

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def dispatch(self, batch: list[Record]) -> None:
        """Offer each record to the local subscribers of its conversation (the Kafka key), same tenant only.

        Records of conversations nobody here follows are skipped without being parsed."""
        for record in batch:
            subs = self._subs.get(record.key.decode(errors="replace")) if record.key else None
            if not subs:
                continue
            try:
                doc = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                log.warning("skipping a malformed agent event", extra={"data": {"offset": record.offset}})
                continue
            if not isinstance(doc, dict):
                continue
            tenant_id, seq = doc.get("tenant_id"), _seq(doc)
            delivered = 0
            for sub in tuple(subs):
                if sub.tenant_id == tenant_id and sub.conversation_id == doc.get("subject"):
                    sub.offer_live(seq, record.value)
                    delivered += 1
            if delivered and doc.get("type") == "run.completed":
                with consume_span(record, "ws_gateway deliver"):
                    log.info(
                        "run events delivered",
                        extra={
                            "data": {
                                "conversation_id": doc.get("subject"),
                                "run_id": (doc.get("data") or {}).get("run_id"),
                                "subscribers": delivered,
                            }
                        },
                    )
