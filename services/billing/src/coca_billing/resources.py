"""What the billing service holds while it runs, opened and closed by the lifespan in ``app.py``:
the pool, the use-cases, and two background tasks (the usage consumer and the reservation sweeper)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from coca_platform.db import Pool, create_pool
from coca_platform.errors import CocaError, Unavailable

from coca_billing.consumers import consume_usage
from coca_billing.metering import UsageMeter
from coca_billing.quota import QuotaService
from coca_billing.reports import UsageReports
from coca_billing.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    pool: Pool
    quota: QuotaService
    meter: UsageMeter
    reports: UsageReports
    consumer: asyncio.Task[None] | None

    async def check_consumer(self) -> None:
        """Readiness: the usage consumer is still running."""
        if self.consumer is not None and self.consumer.done():
            raise Unavailable("the usage consumer has stopped")


async def _sweep_forever(quota: QuotaService, settings: Settings, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await quota.sweep(settings.processed_events_retention_days)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocaError) as exc:
            # the database is away: the next round tries again
            log.warning("billing sweep failed", extra={"data": {"error": str(exc)}})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.sweep_interval_s)


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                settings.database_url,
                schema="coca_billing",
                application_name="coca-billing",
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        )
        quota = QuotaService(
            pool,
            default_plan_id=settings.default_plan_id,
            reservation_ttl_s=settings.reservation_ttl_s,
            max_reservation_tokens=settings.max_reservation_tokens,
        )
        await quota.prepare(settings.free_plan_monthly_tokens)
        meter = UsageMeter(pool)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_sweep_forever(quota, settings, stop), name="billing-sweeper")]
        consumer = None
        if settings.usage_consumer_enabled:
            consumer = asyncio.create_task(consume_usage(settings, meter, stop), name="billing-usage")
            tasks.append(consumer)

        async def stop_tasks() -> None:
            stop.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("billing background task failed", exc_info=result)

        stack.push_async_callback(stop_tasks)
        yield Resources(
            settings,
            pool,
            quota,
            meter,
            UsageReports(pool, max_range_days=settings.usage_max_range_days),
            consumer,
        )
