"""Kafka edge: ``usage.records`` → :class:`~coca_billing.metering.UsageMeter`.

A record is an envelope of type ``usage.recorded`` whose ``data`` is ``{tenant_id, user_id, agent_id,
run_id, model, prompt_tokens, completion_tokens}``; its ``id`` is the dedupe key and its ``time`` when
the usage happened. A batch is validated first, then recorded in one transaction; the platform's
consumer commits offsets only after that. An invalid record raises ``InvalidArgument`` (not retryable):
the platform re-runs the batch record by record and dead-letters that one to ``<topic>.dlq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from uuid import UUID

from coca_platform.envelope import Envelope
from coca_platform.errors import CocaError, InvalidArgument
from coca_platform.kafka import Handler, Record, consume_span, run_consumer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from coca_billing.metering import UsageMeter
from coca_billing.models import UsageEvent
from coca_billing.settings import Settings

log = logging.getLogger(__name__)

USAGE_EVENT_TYPE = "usage.recorded"
# More tokens than any one record can plausibly carry: such a record is refused, not billed.
MAX_RECORD_TOKENS = 100_000_000
_RESTART_DELAY_S = 1.0


class _UsageData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: UUID
    user_id: str | None = Field(default=None, max_length=200)
    agent_id: str | None = Field(default=None, max_length=200)
    run_id: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    prompt_tokens: StrictInt = Field(ge=0, le=MAX_RECORD_TOKENS)
    completion_tokens: StrictInt = Field(ge=0, le=MAX_RECORD_TOKENS)


def _invalid(record: Record, reason: str) -> InvalidArgument:
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    return InvalidArgument(f"invalid usage record {where}: {reason}", code="invalid_usage_record")


def parse_usage(record: Record) -> UsageEvent:
    """The validated event of ``record``, or ``InvalidArgument``."""
    try:
        envelope = Envelope.from_json(record.value)
    except ValueError as exc:  # not JSON, or not an envelope
        raise _invalid(record, f"not an event envelope ({type(exc).__name__})") from None
    if envelope.type != USAGE_EVENT_TYPE:
        raise _invalid(record, f"unexpected event type {envelope.type!r}")
    if not 1 <= len(envelope.id) <= 200:
        raise _invalid(record, "the event id must have 1 to 200 characters")
    try:
        data = _UsageData.model_validate(envelope.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "data"
        raise _invalid(record, f"data.{field}: {first['msg']}") from None
    if str(data.tenant_id) != envelope.tenant_id:
        raise _invalid(record, "data.tenant_id differs from the envelope's tenant_id")
    try:
        occurred_at = datetime.fromisoformat(envelope.time)
    except ValueError:
        raise _invalid(record, f"time {envelope.time!r} is not an RFC 3339 timestamp") from None
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return UsageEvent(
        event_id=envelope.id,
        tenant_id=data.tenant_id,
        user_id=data.user_id,
        agent_id=data.agent_id,
        run_id=data.run_id,
        model=data.model,
        prompt_tokens=data.prompt_tokens,
        completion_tokens=data.completion_tokens,
        occurred_at=occurred_at,
    )


def usage_handler(meter: UsageMeter) -> Handler:
    """The batch handler for ``run_consumer``: validate every record, then one transaction."""

    async def handle(batch: list[Record]) -> None:
        with consume_span(batch[0], "usage.records process") as span:
            span.set_attribute("messaging.batch.message_count", len(batch))
            events = [parse_usage(record) for record in batch]
            await meter.record(events)

    return handle


async def consume_usage(settings: Settings, meter: UsageMeter, stop: asyncio.Event) -> None:
    """Run the usage consumer until ``stop``; a failed broker connection is retried after a pause."""
    handler = usage_handler(meter)
    while not stop.is_set():
        try:
            await run_consumer(
                settings.kafka_bootstrap,
                group_id=settings.usage_consumer_group,
                topics=[settings.usage_topic],
                handler=handler,
                stop=stop,
                batch_size=settings.usage_batch_size,
                client_id=f"coca-{settings.service_name}",
                session_timeout_ms=settings.kafka_session_timeout_ms,
            )
        except CocaError as exc:  # the broker failed; readiness stays up, the loop reconnects
            log.error("usage consumer failed, restarting", extra={"data": {"error": exc.message}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RESTART_DELAY_S)
        except Exception:  # a bug: nothing of the batch was committed; readiness reports the stop
            log.exception("usage consumer crashed")
            raise
