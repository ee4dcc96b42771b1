"""Quota and usage for runs: reserve before a run, meter what it used after.

Before anything is written for a new run, billing reserves an estimate of its tokens from the
tenant's monthly quota (402 ``quota_exceeded`` stops the run before any LLM call). When the run
ends, its usage record goes to Kafka ``usage.records`` (keyed by tenant) and billing settles the
reservation with the actual tokens; the event id is derived from the run id, so a republished
record is never counted twice. A failed run that used no tokens releases its reservation; one that
did is metered like any other (the LLM did the work).

A run whose record Kafka did not acknowledge (Kafka down, process killed) stays marked unpublished
in ``runs``; :func:`sweep_unpublished_usage` publishes it later. Without ``BILLING_SERVICE_ADDR``
quotas are off (usage is still recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from uuid import UUID

from asyncpg.exceptions import PostgresError
from coca_platform.db import Pool
from coca_platform.errors import CocaError
from coca_platform.kafka import KafkaProducer

from coca_agent.billing_client import USAGE_TOPIC, BillingClient
from coca_agent.models import Usage
from coca_agent.repository import UsageRepository

log = logging.getLogger(__name__)


class Metering:
    def __init__(self, billing: BillingClient | None, producer: KafkaProducer, reserve_tokens: int) -> None:
        self._billing, self._producer, self._reserve_tokens = billing, producer, reserve_tokens

    def estimate(self, history_chars: int) -> int:
        """Tokens to hold for a run: its context (~4 characters a token) plus room for the reply."""
        return min(1_000_000, history_chars // 4 + self._reserve_tokens)

    async def reserve(self, tenant_id: UUID, run_id: UUID, estimated_tokens: int) -> None:
        if self._billing is not None:
            await self._billing.reserve(tenant_id, run_id, estimated_tokens)

    async def release(self, run_id: UUID) -> None:
        """Best effort: an unreleased reservation expires on its own."""
        if self._billing is None:
            return
        try:
            await self._billing.release(run_id)
        except CocaError as exc:
            log.warning(
                "reservation not released", extra={"data": {"run_id": str(run_id), "error": exc.code}}
            )

    async def record(
        self, tenant_id: UUID, user_id: UUID, agent_id: UUID, run_id: UUID, model: str, usage: Usage
    ) -> None:
        """The run's usage record, acknowledged by Kafka (raises Unavailable if it is not)."""
        envelope = BillingClient.usage_envelope(
            tenant_id, user_id, agent_id, run_id, model, usage.prompt_tokens, usage.completion_tokens
        )
        await self._producer.produce(USAGE_TOPIC, envelope.to_json(), key=str(tenant_id))


async def sweep_unpublished_usage(
    pool: Pool,
    metering: Metering,
    default_model: str,
    *,
    interval_s: float,
    grace_s: float,
    stop: asyncio.Event,
) -> None:
    """Every ``interval_s``, publish the usage of runs that ended over ``grace_s`` ago without it.
    Safe on every replica: a run published twice has one event id."""
    while not stop.is_set():
        try:
            await sweep_once(pool, metering, default_model, grace_s)
        except (CocaError, PostgresError, OSError) as exc:
            log.warning("usage sweep failed", extra={"data": {"error": str(exc)}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def sweep_once(pool: Pool, metering: Metering, default_model: str, grace_s: float) -> int:
    async with pool.acquire() as conn:
        rows = await UsageRepository(conn).unpublished(timedelta(seconds=grace_s), 200)
    for row in rows:
        usage = Usage(row["prompt_tokens"], row["completion_tokens"])
        await metering.record(
            row["tenant_id"],
            row["user_id"],
            row["agent_id"],
            row["run_id"],
            row["model"] or default_model,
            usage,
        )
        async with pool.acquire() as conn:
            await UsageRepository(conn).mark_published(row["tenant_id"], row["run_id"])
    if rows:
        log.info("usage records republished", extra={"data": {"runs": len(rows)}})
    return len(rows)
