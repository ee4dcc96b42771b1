"""Use-cases of quotas: reserve tokens before a run, release them after a failed one, the balance,
plans, and the sweep of expired reservations.

A reservation is decided under a row lock on the tenant's quota row for the current month
(``quota_periods``): concurrent reservations of one tenant queue on it, whichever replica serves them,
so ``used + reserved + requested <= quota`` holds across replicas. Reserved tokens are the tenant's
``reserved`` reservations that have not expired; the usage consumer settles a run's reservation (its
actual tokens count as used instead) in the same transaction that records the usage.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import UUID

from coca_platform.db import Pool
from coca_platform.errors import Conflict, InvalidArgument, NotFound, PaymentRequired
from prometheus_client import Counter

from coca_billing.models import Balance, Grant, Period, Plan, Reservation, ReservationStatus
from coca_billing.quota_repository import QuotaRepository

log = logging.getLogger(__name__)

FREE_PLAN_ID = "free"
_SWEEP_BATCH = 1000

RESERVATIONS = Counter("coca_billing_reservations_total", "Quota reservations asked for", ["result"])


class QuotaService:
    def __init__(
        self, pool: Pool, *, default_plan_id: str, reservation_ttl_s: float, max_reservation_tokens: int
    ) -> None:
        self._pool = pool
        self._default_plan_id = default_plan_id
        self._ttl_s = reservation_ttl_s
        self._max_tokens = max_reservation_tokens

    async def prepare(self, free_plan_monthly_tokens: int) -> None:
        """At startup: the free plan's quota from the settings; the default plan must exist."""
        async with self._pool.acquire() as conn:
            repo = QuotaRepository(conn)
            await repo.set_plan_quota(FREE_PLAN_ID, "Free", free_plan_monthly_tokens)
            if await repo.plan(self._default_plan_id) is None:
                raise RuntimeError(f"DEFAULT_PLAN_ID names plan {self._default_plan_id!r}: no such plan")

    async def reserve(self, tenant_id: UUID, run_id: str, tokens: int) -> Grant:
        """Hold ``tokens`` of the tenant's monthly quota for ``run_id``, or refuse with 402.

        Repeating the request for a run that holds a live reservation returns that reservation."""
        if not 1 <= tokens <= self._max_tokens:
            raise InvalidArgument(
                f"a run may reserve 1 to {self._max_tokens} tokens; {tokens} were asked",
                code="reservation_too_large",
            )
        now = datetime.now(UTC)
        period = Period.of(now)
        async with self._pool.acquire() as conn, conn.transaction():
            repo = QuotaRepository(conn)
            used, plan = await repo.lock_period(tenant_id, period.start, self._default_plan_id)
            existing = await repo.reservation(run_id)
            reserved = await repo.active_reserved(tenant_id)
            if existing is not None:
                _check_repeat(existing, tenant_id, now)
                return Grant(existing, max(0, plan.monthly_token_quota - used - reserved))
            if used + reserved + tokens > plan.monthly_token_quota:
                RESERVATIONS.labels("refused").inc()
                raise _quota_exceeded(plan, period, used, reserved, tokens)
            reservation = await repo.insert_reservation(tenant_id, run_id, tokens, self._ttl_s)
        RESERVATIONS.labels("granted").inc()
        log.info(
            "tokens reserved",
            extra={"data": {"tenant_id": str(tenant_id), "run_id": run_id, "tokens": tokens}},
        )
        return Grant(reservation, plan.monthly_token_quota - used - reserved - tokens)

    async def release(self, run_id: str) -> Reservation:
        """Give a failed run's reserved tokens back without charging anything. Idempotent: a run whose
        reservation already ended returns it as it is."""
        async with self._pool.acquire() as conn:
            repo = QuotaRepository(conn)
            released = await repo.release(run_id)
            if released is not None:
                log.info("reservation released", extra={"data": {"run_id": run_id}})
                return released
            existing = await repo.reservation(run_id)
        if existing is None:
            raise NotFound(f"no reservation for run {run_id!r}")
        return existing

    async def balance(self, tenant_id: UUID) -> Balance:
        period = Period.of(datetime.now(UTC))
        async with self._pool.acquire() as conn:
            repo = QuotaRepository(conn)
            plan = await repo.plan_of(tenant_id, self._default_plan_id)
            if plan is None:
                raise NotFound(f"plan {self._default_plan_id!r} does not exist")
            used, cost = await repo.period_usage(tenant_id, period.start)
            reserved = await repo.active_reserved(tenant_id)
        return Balance(plan, period, used, reserved, cost)

    async def assign_plan(self, tenant_id: UUID, plan_id: str) -> Plan:
        async with self._pool.acquire() as conn, conn.transaction():
            repo = QuotaRepository(conn)
            plan = await repo.plan(plan_id)
            if plan is None:
                raise NotFound(f"no plan {plan_id!r}")
            await repo.assign_plan(tenant_id, plan_id)
        log.info("plan assigned", extra={"data": {"tenant_id": str(tenant_id), "plan_id": plan_id}})
        return plan

    async def sweep(self, processed_events_retention_days: int) -> tuple[int, int]:
        """Mark reservations past their TTL expired and purge old dedupe rows; safe on every replica."""
        async with self._pool.acquire() as conn:
            repo = QuotaRepository(conn)
            expired = await repo.expire_due(_SWEEP_BATCH)
            purged = await repo.purge_processed(processed_events_retention_days, _SWEEP_BATCH)
        if expired or purged:
            log.info("billing sweep", extra={"data": {"expired": expired, "purged_event_ids": purged}})
        return expired, purged


def _check_repeat(existing: Reservation, tenant_id: UUID, now: datetime) -> None:
    if existing.tenant_id != tenant_id:
        raise Conflict(f"run {existing.run_id!r} belongs to another tenant")
    if existing.status != ReservationStatus.RESERVED:
        raise Conflict(f"run {existing.run_id!r} already has a {existing.status} reservation")
    if existing.expires_at <= now:
        raise Conflict(f"the reservation of run {existing.run_id!r} has expired")


def _quota_exceeded(plan: Plan, period: Period, used: int, reserved: int, tokens: int) -> PaymentRequired:
    return PaymentRequired(
        f"monthly token quota exceeded: plan {plan.id!r} allows {plan.monthly_token_quota} tokens a month;"
        f" {used} used and {reserved} reserved this month, {tokens} more requested."
        f" The quota resets on {period.end:%Y-%m-%d} (UTC).",
        code="quota_exceeded",
    )
