"""Topics: the brief's ``TOPICS`` and an idempotent ``create_topics``."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from coca_platform.errors import Unavailable
from coca_platform.kafka.records import client_config

DAY_MS = 24 * 3600 * 1000
#: name -> (partitions, retention ms or None for the broker default)
TOPICS: dict[str, tuple[int, int | None]] = {
    "agent.events": (8, 7 * DAY_MS),
    "agent.tasks": (4, None),
    "usage.records": (4, 30 * DAY_MS),
    "audit.logs": (2, 90 * DAY_MS),
}


async def create_topics(
    bootstrap: str, topics: dict[str, tuple[int, int | None]], timeout_s: float = 15
) -> None:
    """Create missing topics: name -> (partitions, retention ms or None). Existing ones are left alone."""
    if not topics:
        return
    admin = AdminClient(client_config(bootstrap, {}))
    new = [
        NewTopic(
            name,
            num_partitions=parts,
            replication_factor=-1,
            config={"retention.ms": str(retention)} if retention is not None else {},
        )
        for name, (parts, retention) in topics.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            await asyncio.wrap_future(fut)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise Unavailable(f"cannot create kafka topic {name!r}: {exc}") from exc
