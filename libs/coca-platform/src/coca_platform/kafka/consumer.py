"""Consumer-group loop: batches to an async handler, commit after it returned, retry, dead-letter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from coca_platform.errors import CocaError
from coca_platform.kafka.admin import create_topics
from coca_platform.kafka.producer import KafkaProducer, open_producer
from coca_platform.kafka.records import CONSUMER_DEFAULTS, Record, client_config, log, next_batch

Handler = Callable[[list[Record]], Awaitable[None]]


async def run_consumer(
    bootstrap: str,
    *,
    group_id: str,
    topics: Sequence[str],
    handler: Handler,
    stop: asyncio.Event,
    batch_size: int = 500,
    poll_timeout_s: float = 0.5,
    max_backoff_s: float = 30.0,
    **extra_config: Any,
) -> None:
    """Consume ``topics`` as ``group_id`` until ``stop`` is set.

    The handler gets each batch; the batch's offsets are committed (synchronously) only after it
    returned. A retryable ``CocaError`` rewinds to the batch and fetches it again after a backoff
    (0.2 s doubling up to ``max_backoff_s``; the consumer keeps polling, so it stays in the group).
    A non-retryable ``CocaError`` re-runs the batch record by record and sends the records that
    still fail to ``<topic>.dlq``, so a poison message never blocks its partition. Any other
    exception propagates: nothing of the batch is committed and it is redelivered on restart.
    """
    conf = client_config(
        bootstrap,
        {
            **CONSUMER_DEFAULTS,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra_config,
        },
    )
    consumer = Consumer(conf)
    consumer.subscribe(list(topics))
    failures = 0
    async with AsyncExitStack() as stack:
        dlq = _DeadLetters(bootstrap, group_id, stack)
        try:
            while not stop.is_set():
                batch = await next_batch(consumer, batch_size, poll_timeout_s)
                if not batch:
                    continue
                try:
                    await _handle(batch, handler, dlq)
                except CocaError as exc:  # only retryable ones get here
                    failures += 1
                    delay = min(0.2 * 2 ** (failures - 1), max_backoff_s)
                    log.warning(
                        "kafka batch failed, will retry",
                        extra={
                            "data": {
                                "group": group_id,
                                "error": exc.code,
                                "attempt": failures,
                                "retry_in_s": delay,
                            }
                        },
                    )
                    _rewind(consumer, batch)
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                failures = 0
                await _commit(consumer, batch)
        finally:
            await asyncio.to_thread(consumer.close)


async def _handle(batch: list[Record], handler: Handler, dlq: _DeadLetters) -> None:
    try:
        await handler(batch)
        return
    except CocaError as exc:
        if exc.retryable:
            raise
        if len(batch) == 1:
            await dlq.send(batch[0], exc)
            return
    for record in batch:  # isolate the poison record(s); handlers are idempotent
        try:
            await handler([record])
        except CocaError as exc:
            if exc.retryable:
                raise
            await dlq.send(record, exc)


def _rewind(consumer: Consumer, batch: list[Record]) -> None:
    first: dict[tuple[str, int], int] = {}
    for r in batch:
        first.setdefault((r.topic, r.partition), r.offset)
    for (topic, partition), offset in first.items():
        # Revoked meanwhile: the new owner starts from the committed offset anyway.
        with suppress(KafkaException):
            consumer.seek(TopicPartition(topic, partition, offset))


async def _commit(consumer: Consumer, batch: list[Record]) -> None:
    last: dict[tuple[str, int], int] = {}
    for r in batch:
        last[(r.topic, r.partition)] = r.offset
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    try:
        await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
    except KafkaException as exc:  # e.g. a rebalance: the records are redelivered, handlers dedupe
        log.warning("kafka commit failed", extra={"data": {"error": str(exc)}})


class _DeadLetters:
    """Sends poison records to ``<topic>.dlq`` (created on first use), with the error in headers."""

    def __init__(self, bootstrap: str, group_id: str, stack: AsyncExitStack) -> None:
        self._bootstrap, self._group_id, self._stack = bootstrap, group_id, stack
        self._producer: KafkaProducer | None = None
        self._created: set[str] = set()

    async def send(self, record: Record, exc: CocaError) -> None:
        topic = f"{record.topic}.dlq"
        if self._producer is None:
            self._producer = await self._stack.enter_async_context(
                open_producer(self._bootstrap, client_id=f"{self._group_id}-dlq")
            )
        if topic not in self._created:
            await create_topics(self._bootstrap, {topic: (1, None)})
            self._created.add(topic)
        headers = {k: v.decode(errors="replace") for k, v in record.headers.items()}
        headers.update(
            {
                "dlq.error.code": exc.code,
                "dlq.error.message": exc.message[:1000],
                "dlq.group": self._group_id,
                "dlq.topic": record.topic,
                "dlq.partition": str(record.partition),
                "dlq.offset": str(record.offset),
            }
        )
        await self._producer.produce(topic, record.value, key=record.key, headers=headers)
        log.warning(
            "kafka record dead-lettered",
            extra={
                "data": {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": exc.code,
                    "group": self._group_id,
                }
            },
        )
