"""Fan-out reading: every instance reads every partition of a topic; no group, no commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from coca_platform.errors import Unavailable
from coca_platform.kafka.records import Record, client_config, log, next_batch

Start = Literal["end", "beginning"]


class TailReader:
    """Reads all partitions of one topic from the positions fixed by ``open_tail``."""

    def __init__(self, consumer: Consumer, topic: str, admin: AdminClient) -> None:
        self._consumer, self.topic, self._admin = consumer, topic, admin

    async def batches(
        self, stop: asyncio.Event, *, batch_size: int = 1000, poll_timeout_s: float = 0.5
    ) -> AsyncIterator[list[Record]]:
        """Non-empty batches until ``stop`` is set (checked at least every ``poll_timeout_s``)."""
        while not stop.is_set():
            batch = await next_batch(self._consumer, batch_size, poll_timeout_s)
            if batch:
                yield batch

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Readiness: the cluster answers a metadata request for the topic. Asked on a handle of its own:
        on the consumer's, it queues behind the fetches in flight (seconds on some brokers)."""
        try:
            await asyncio.to_thread(self._admin.list_topics, self.topic, timeout=timeout_s)
        except KafkaException as exc:
            raise Unavailable(f"kafka metadata request failed: {exc}") from exc


def _assign(consumer: Consumer, topic: str, start: Start) -> int:
    meta = consumer.list_topics(topic, timeout=10)
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise Unavailable(f"kafka topic {topic!r} is not available")
    assignment = []
    for p in sorted(info.partitions):
        if start == "end":  # a concrete offset now, so nothing produced after open_tail returns is missed
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assignment.append(TopicPartition(topic, p, high))
        else:
            assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
    consumer.assign(assignment)
    return len(assignment)


@asynccontextmanager
async def open_tail(
    bootstrap: str, topic: str, *, start: Start = "end", **extra_config: Any
) -> AsyncIterator[TailReader]:
    """A positioned ``TailReader``: every message produced after this returns will be read.

    Partitions added to the topic later are not picked up (restart the reader for that)."""
    conf = client_config(
        bootstrap,
        {
            "group.id": f"coca-tail-{uuid.uuid4().hex}",  # never joined or committed; librdkafka wants one
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # push latency: brokers may hold a fetch this long when there is no data (Tansu always does)
            "fetch.wait.max.ms": 20,
            **extra_config,
        },
    )
    consumer = Consumer(conf)
    try:
        try:
            partitions = await asyncio.to_thread(_assign, consumer, topic, start)
        except KafkaException as exc:
            raise Unavailable(f"kafka tail of {topic!r} failed: {exc}") from exc
        log.info("kafka tail assigned", extra={"data": {"topic": topic, "partitions": partitions}})
        yield TailReader(consumer, topic, AdminClient(client_config(bootstrap, {})))
    finally:
        await asyncio.to_thread(consumer.close)


async def tail(
    bootstrap: str,
    topic: str,
    *,
    stop: asyncio.Event,
    batch_size: int = 1000,
    start: Start = "end",
    **extra_config: Any,
) -> AsyncIterator[list[Record]]:
    """Batches of every message of ``topic`` (all partitions) until ``stop`` is set."""
    async with open_tail(bootstrap, topic, start=start, **extra_config) as reader:
        async for batch in reader.batches(stop, batch_size=batch_size):
            yield batch
