"""The consumed record, client configuration, batch fetching and the consumer span."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from coca_platform.errors import Unavailable
from coca_platform.observability import extract_context

log = logging.getLogger("coca_platform.kafka")
_tracer = trace.get_tracer("coca.kafka")

# Small brokers (Tansu) make a new group wait ~24 s with librdkafka's defaults.
CONSUMER_DEFAULTS: dict[str, Any] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def client_config(bootstrap: str, extra: dict[str, Any]) -> dict[str, Any]:
    """librdkafka config; ``extra`` keys may use ``_`` for ``.``. librdkafka logs go to our logger."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log}
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


def from_message(msg: Message) -> Record:
    key = msg.key()
    value = msg.value()
    raw_headers: Any = msg.headers() or []
    headers: list[tuple[str, Any]] = list(
        raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    )
    return Record(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else (value or b""),
        headers={k: (v.encode() if isinstance(v, str) else (v or b"")) for k, v in headers},
        timestamp_ms=msg.timestamp()[1],
    )


def _fetch(consumer: Consumer, size: int, timeout_s: float) -> list[Message]:
    # consume(n, timeout) waits for n messages or the whole timeout; poll returns on the first one,
    # then consume(.., 0) takes what is already fetched: low latency and batches under load.
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]


async def next_batch(consumer: Consumer, size: int, timeout_s: float) -> list[Record]:
    """Up to ``size`` records, fetched in a worker thread so the event loop never blocks."""
    messages = await asyncio.to_thread(_fetch, consumer, size, timeout_s)
    batch = []
    for msg in messages:
        err = msg.error()
        if err is None:
            batch.append(from_message(msg))
        elif err.fatal():
            raise Unavailable(f"kafka consumer failed: {err.str()}")
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka consumer error", extra={"data": {"error": err.str()}})
    return batch


@contextmanager
def consume_span(record: Record, name: str | None = None) -> Iterator[Span]:
    """A CONSUMER span for handling ``record``, child of the producer's trace (from its headers)."""
    with _tracer.start_as_current_span(
        name or f"{record.topic} process",
        context=extract_context(record.headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.kafka.partition": record.partition,
            "messaging.kafka.offset": record.offset,
        },
    ) as span:
        yield span
