"""A run's events: appended to the conversation's event log (which assigns ``seq``), produced to
Kafka ``agent.events`` keyed by conversation id, and handed to the request that started the run.

The bytes returned by ``EventLog.append`` are what Kafka, the SSE stream and the replay endpoint
all carry, so every consumer sees identical envelopes. SSE frames are built once from them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

from coca_platform.envelope import new_envelope
from coca_platform.errors import Unavailable
from coca_platform.eventlog import EventLog
from coca_platform.kafka import KafkaProducer
from redis.exceptions import RedisError

from coca_agent.models import Message

EVENTS_TOPIC = "agent.events"
SOURCE = "agent"
TERMINAL_TYPES = frozenset({"run.completed", "run.failed"})


class EventsUnavailable(Unavailable):
    code = "events_unavailable"


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE event, ready to send."""

    data: bytes
    terminal: bool


def message_payload(message: Message) -> dict[str, Any]:
    """A message as the public API and the events show it."""
    return {
        "id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "run_id": str(message.run_id),
        "role": message.role.value,
        "content": message.content,
        # null rather than []: the event log's Lua JSON codec turns an empty array into {}.
        "tool_calls": [c.to_openai() for c in message.tool_calls] or None,
        "tool_call_id": message.tool_call_id,
        "created_at": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def sse_frame(event_id: str, type_: str, envelope_json: bytes) -> bytes:
    return b"".join(
        (b"id: ", event_id.encode(), b"\nevent: ", type_.encode(), b"\ndata: ", envelope_json, b"\n\n")
    )


class EventPublisher:
    def __init__(self, log: EventLog, producer: KafkaProducer) -> None:
        self.log = log
        self._producer = producer

    def for_run(
        self, tenant_id: UUID, conversation_id: UUID, run_id: UUID, listener: asyncio.Queue[Frame] | None
    ) -> RunEvents:
        return RunEvents(
            self.log, self._producer, str(tenant_id), str(conversation_id), str(run_id), listener
        )


class RunEvents:
    """Emits one run's envelopes in order; ``confirm`` waits until Kafka acknowledged all of them."""

    def __init__(
        self,
        log: EventLog,
        producer: KafkaProducer,
        tenant_id: str,
        conversation_id: str,
        run_id: str,
        listener: asyncio.Queue[Frame] | None,
    ) -> None:
        self._log, self._producer = log, producer
        self._tenant_id, self._conversation_id, self.run_id = tenant_id, conversation_id, run_id
        self._listener = listener
        self._pending: list[asyncio.Future[None]] = []
        self.terminal_sent = False

    async def emit(self, type_: str, data: dict[str, Any]) -> None:
        envelope = new_envelope(
            type_,
            source=SOURCE,
            tenant_id=self._tenant_id,
            subject=self._conversation_id,
            data={"run_id": self.run_id, **data},
        )
        try:
            _, raw = await self._log.append(envelope)
        except (RedisError, OSError) as exc:
            raise EventsUnavailable(f"cannot append to the conversation's event log: {exc}") from exc
        # The producer puts the current trace context (traceparent) in the message headers.
        self._pending.append(self._producer.produce_nowait(EVENTS_TOPIC, raw, key=self._conversation_id))
        terminal = type_ in TERMINAL_TYPES
        self.terminal_sent = self.terminal_sent or terminal
        if self._listener is not None:
            self._listener.put_nowait(Frame(sse_frame(envelope.id, type_, raw), terminal))

    async def confirm(self) -> None:
        """Wait for Kafka's acknowledgement of everything emitted so far (``EventsUnavailable`` if lost)."""
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise EventsUnavailable(
                f"{len(failed)} event(s) of the run were not delivered to Kafka: {failed[0]}"
            )
