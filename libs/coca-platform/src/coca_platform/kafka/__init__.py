"""Kafka with confluent-kafka, without blocking the event loop.

- ``open_producer``: an idempotent producer (``acks=all``) whose delivery reports resolve asyncio
  futures; a background thread services them. The current trace context goes into the headers.
- ``run_consumer``: a consumer-group loop that hands *batches* to an async handler and commits a
  batch's offsets only after the handler returned (at-least-once). A retryable ``CocaError`` makes
  the batch be fetched again after a bounded exponential backoff; a non-retryable ``CocaError``
  isolates the poison record(s), which go to ``<topic>.dlq`` with the error in headers, and the
  partition moves on. Any other exception is a bug: it propagates, nothing is committed, and the
  records are redelivered when the consumer is started again.
- ``tail`` / ``open_tail``: every instance reads every partition of a topic (fan-out; no group, no
  commits), from the end (positions fixed when the tail opens) or the beginning.
- Dedupe on the envelope id: ``RedisDeduper`` for Redis effects, ``pg_first_seen`` in the same
  PostgreSQL transaction as the effect (include ``PROCESSED_EVENTS_DDL`` in a migration).
- ``create_topics`` (idempotent) and ``TOPICS``, the topics of the architecture brief.
- ``consume_span(record)``: a CONSUMER span continuing the producer's trace, for handling a record.

Config keys may be given as ``**{"session.timeout.ms": 6000}`` or ``session_timeout_ms=6000``.
"""

from coca_platform.kafka.admin import DAY_MS, TOPICS, create_topics
from coca_platform.kafka.consumer import Handler, run_consumer
from coca_platform.kafka.dedupe import PROCESSED_EVENTS_DDL, Deduper, RedisDeduper, pg_first_seen
from coca_platform.kafka.producer import KafkaProducer, open_producer
from coca_platform.kafka.records import CONSUMER_DEFAULTS, Record, consume_span
from coca_platform.kafka.tail import TailReader, open_tail, tail

__all__ = [
    "CONSUMER_DEFAULTS",
    "DAY_MS",
    "PROCESSED_EVENTS_DDL",
    "TOPICS",
    "Deduper",
    "Handler",
    "KafkaProducer",
    "Record",
    "RedisDeduper",
    "TailReader",
    "consume_span",
    "create_topics",
    "open_producer",
    "open_tail",
    "pg_first_seen",
    "run_consumer",
    "tail",
]
