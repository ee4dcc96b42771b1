"""Use-case of metering: record usage events exactly once, price them, post them to the ledger and
settle their runs' reservations, all in one PostgreSQL transaction per batch.

Each event id is claimed with ``pg_first_seen`` in that transaction (and is the primary key of
``usage_records`` besides): a redelivered event changes nothing, and an event whose transaction did
not commit was never claimed, so a crash anywhere before the offset commit loses nothing.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from coca_platform.db import Pool
from coca_platform.errors import Unavailable
from coca_platform.kafka import pg_first_seen
from prometheus_client import Counter

from coca_billing.models import (
    DEFAULT_PRICE_MODEL,
    REVENUE_ACCOUNT,
    USAGE_ACCOUNT,
    Period,
    Price,
    UsageEvent,
)
from coca_billing.quota_repository import QuotaRepository
from coca_billing.usage_repository import UsageRepository

log = logging.getLogger(__name__)

USAGE_EVENTS = Counter(
    "coca_billing_usage_events_total", "Usage events consumed, new or duplicate (not counted)", ["result"]
)
METERED_TOKENS = Counter("coca_billing_metered_tokens_total", "Tokens recorded as used")

#: The dedupe namespace of this consumer in ``processed_events``.
CONSUMER = "billing-usage"

# Failures that another attempt can get past: the batch is retried, never dead-lettered.
_TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class MissingPrice(Unavailable):
    """No price row for a model and no default ``*`` row: retried until an operator adds one."""

    code = "missing_price"


def price_of(prices: dict[str, Price], model: str) -> Price:
    price = prices.get(model) or prices.get(DEFAULT_PRICE_MODEL)
    if price is None:
        raise MissingPrice(f"no price for model {model!r} and no default price row {DEFAULT_PRICE_MODEL!r}")
    return price


class UsageMeter:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record(self, events: list[UsageEvent]) -> int:
        """Apply ``events`` in one transaction; returns how many were new (the rest were duplicates)."""
        if not events:
            return 0
        # One lock order (tenant, then period) for every batch on every replica: no deadlocks.
        ordered = sorted(events, key=lambda e: (str(e.tenant_id), e.occurred_at))
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                new = await self._apply(conn, ordered)
        except _TRANSIENT as exc:
            raise Unavailable(f"usage not recorded, will retry: {type(exc).__name__}") from exc
        USAGE_EVENTS.labels("new").inc(new)
        USAGE_EVENTS.labels("duplicate").inc(len(events) - new)
        log.info("usage recorded", extra={"data": {"events": len(events), "new": new}})
        return new

    async def _apply(self, conn: asyncpg.Connection, events: list[UsageEvent]) -> int:
        usage, quota = UsageRepository(conn), QuotaRepository(conn)
        prices = await usage.prices(e.model for e in events)
        new = 0
        for event in events:
            if not await pg_first_seen(conn, event.event_id, CONSUMER):
                continue
            cost = price_of(prices, event.model).cost(event.prompt_tokens, event.completion_tokens)
            transaction_id = uuid.uuid4() if cost else None
            if not await usage.insert(event, cost, transaction_id):
                continue  # recorded before the dedupe rows were purged
            period = Period.of(event.occurred_at)
            await quota.add_period_usage(event.tenant_id, period.start, event.total_tokens, cost)
            if transaction_id is not None:
                debit = USAGE_ACCOUNT.format(tenant_id=event.tenant_id)
                await usage.post_ledger(
                    transaction_id, event.tenant_id, [(debit, cost), (REVENUE_ACCOUNT, -cost)]
                )
            await quota.settle(event.run_id, event.tenant_id, event.total_tokens)
            METERED_TOKENS.inc(event.total_tokens)
            new += 1
        return new
