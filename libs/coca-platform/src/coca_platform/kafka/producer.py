"""An idempotent producer whose delivery reports resolve asyncio futures."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from coca_platform.errors import Unavailable
from coca_platform.kafka.records import client_config, log
from coca_platform.observability import inject_headers

_Headers = list[tuple[str, str | bytes | None]]
_Item = tuple[str, bytes, "str | bytes | None", _Headers, "asyncio.Future[None]"]


class KafkaProducer:
    """Use ``open_producer``. Safe to call from the event loop; never blocks it for long.

    A background thread polls librdkafka for delivery reports and hands each to the loop with
    ``call_soon_threadsafe``. When librdkafka's queue is full (``BufferError``), messages wait in a
    local backlog, in order, and are retried for up to ``backlog_wait_s``.
    """

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop, backlog_wait_s: float) -> None:
        self._producer = producer
        self._loop = loop
        self._backlog_wait_s = backlog_wait_s
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)
        self._backlog: deque[_Item] = deque()
        self._drainer: asyncio.Task[None] | None = None

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _on_delivery(self, fut: asyncio.Future[None]) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, _msg: Message) -> None:
            self._loop.call_soon_threadsafe(_settle, fut, err)

        return report

    def produce_nowait(
        self, topic: str, value: bytes, *, key: str | bytes | None, headers: dict[str, str] | None = None
    ) -> asyncio.Future[None]:
        """Queue a message; the future resolves on its delivery report (``Unavailable`` on failure)."""
        fut: asyncio.Future[None] = self._loop.create_future()
        hdrs: _Headers = [(k, v.encode()) for k, v in inject_headers(headers).items()]
        item: _Item = (topic, value, key, hdrs, fut)
        if self._backlog or not self._try_produce(item):
            self._backlog.append(item)  # later messages queue behind it, so order is kept
            if self._drainer is None or self._drainer.done():
                self._drainer = self._loop.create_task(self._drain())
        return fut

    def _try_produce(self, item: _Item) -> bool:
        topic, value, key, hdrs, fut = item
        try:
            self._producer.produce(topic, value, key, headers=hdrs, on_delivery=self._on_delivery(fut))
        except BufferError:
            return False
        except KafkaException as exc:
            fut.set_exception(Unavailable(f"kafka produce to {topic!r} failed: {exc}"))
        return True

    async def _drain(self) -> None:
        waited, delay = 0.0, 0.005
        while self._backlog:
            if self._try_produce(self._backlog[0]):
                self._backlog.popleft()
                waited, delay = 0.0, 0.005
                continue
            if waited >= self._backlog_wait_s:
                while self._backlog:
                    fut = self._backlog.popleft()[4]
                    if not fut.done():
                        fut.set_exception(Unavailable("kafka producer queue is full"))
                return
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.2)

    async def produce(
        self, topic: str, value: bytes, *, key: str | bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        """Produce and wait for the broker's acknowledgement."""
        await self.produce_nowait(topic, value, key=key, headers=headers)

    async def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still in flight."""
        if self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        return await asyncio.to_thread(self._producer.flush, timeout_s)

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Readiness: the cluster answers a metadata request."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except KafkaException as exc:
            raise Unavailable(f"kafka metadata request failed: {exc}") from exc

    def start(self) -> None:
        self._poller.start()

    async def close(self, timeout_s: float) -> None:
        try:
            left = await self.flush(timeout_s)
            if left:
                log.warning(
                    "kafka producer closed with undelivered messages", extra={"data": {"count": left}}
                )
        finally:
            self._stop.set()
            await asyncio.to_thread(self._poller.join)


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(Unavailable(f"kafka delivery failed: {err.str()}"))


@asynccontextmanager
async def open_producer(
    bootstrap: str,
    *,
    client_id: str,
    close_timeout_s: float = 10.0,
    backlog_wait_s: float = 10.0,
    **extra_config: Any,
) -> AsyncIterator[KafkaProducer]:
    """An idempotent producer (acks=all, lz4, linger 5 ms); flushed and stopped on exit."""
    conf = client_config(
        bootstrap,
        {
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            **extra_config,
        },
    )
    try:
        raw = Producer(conf)
    except KafkaException:  # a librdkafka build without lz4
        raw = Producer({**conf, "compression.type": "none"})
    producer = KafkaProducer(raw, asyncio.get_running_loop(), backlog_wait_s)
    producer.start()
    try:
        yield producer
    finally:
        await producer.close(close_timeout_s)
