"""SQL for plans, tenants' plans, quota periods and reservations (asyncpg; schema ``coca_billing``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from coca_billing.models import Plan, Reservation, ReservationStatus

_UPSERT_PLAN_QUOTA = """
INSERT INTO plans (id, name, monthly_token_quota) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET monthly_token_quota = EXCLUDED.monthly_token_quota
WHERE plans.monthly_token_quota <> EXCLUDED.monthly_token_quota
"""
_GET_PLAN = "SELECT id, name, monthly_token_quota FROM plans WHERE id = $1"
_PLAN_OF_TENANT = """
SELECT id, name, monthly_token_quota FROM plans
WHERE id = coalesce((SELECT plan_id FROM tenant_plans WHERE tenant_id = $1), $2)
"""
_ENSURE_TENANT = """
INSERT INTO tenant_plans (tenant_id, plan_id) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING
"""
_ASSIGN_PLAN = """
INSERT INTO tenant_plans (tenant_id, plan_id) VALUES ($1, $2)
ON CONFLICT (tenant_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, updated_at = now()
"""

_ENSURE_PERIOD = """
INSERT INTO quota_periods (tenant_id, period_start) VALUES ($1, $2)
ON CONFLICT (tenant_id, period_start) DO NOTHING
"""
# The lock every reservation of the tenant queues on, whichever replica serves it.
_LOCK_PERIOD = """
SELECT q.used_tokens, p.id, p.name, p.monthly_token_quota
FROM quota_periods q
JOIN tenant_plans t ON t.tenant_id = q.tenant_id
JOIN plans p ON p.id = t.plan_id
WHERE q.tenant_id = $1 AND q.period_start = $2
FOR UPDATE OF q
"""
_PERIOD_USAGE = """
SELECT used_tokens, cost_micros FROM quota_periods WHERE tenant_id = $1 AND period_start = $2
"""
_ADD_PERIOD_USAGE = """
INSERT INTO quota_periods (tenant_id, period_start, used_tokens, cost_micros) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, period_start) DO UPDATE SET
    used_tokens = quota_periods.used_tokens + EXCLUDED.used_tokens,
    cost_micros = quota_periods.cost_micros + EXCLUDED.cost_micros
"""

_ACTIVE_RESERVED = """
SELECT coalesce(sum(tokens), 0)::bigint FROM reservations
WHERE tenant_id = $1 AND status = 'reserved' AND expires_at > now()
"""
_GET_RESERVATION = """
SELECT id, tenant_id, run_id, tokens, status, expires_at FROM reservations WHERE run_id = $1
"""
_INSERT_RESERVATION = """
INSERT INTO reservations (tenant_id, run_id, tokens, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
RETURNING id, tenant_id, run_id, tokens, status, expires_at
"""
_RELEASE = """
UPDATE reservations SET status = 'released', updated_at = now()
WHERE run_id = $1 AND status = 'reserved'
RETURNING id, tenant_id, run_id, tokens, status, expires_at
"""
# The run's actual tokens replace its reservation; a later usage event of the same run adds to them.
_SETTLE = """
UPDATE reservations SET status = 'settled', settled_tokens = coalesce(settled_tokens, 0) + $3,
    updated_at = now()
WHERE run_id = $1 AND tenant_id = $2 AND status IN ('reserved', 'expired', 'settled')
"""
_EXPIRE_DUE = """
WITH due AS (
    SELECT id FROM reservations WHERE status = 'reserved' AND expires_at <= now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE reservations r SET status = 'expired', updated_at = now() FROM due WHERE r.id = due.id
"""
_PURGE_PROCESSED = """
DELETE FROM processed_events WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM processed_events WHERE processed_at < now() - make_interval(days => $1) LIMIT $2
))
"""


def _plan(row: Any) -> Plan:
    return Plan(id=row["id"], name=row["name"], monthly_token_quota=row["monthly_token_quota"])


def _reservation(row: Any) -> Reservation:
    return Reservation(
        id=row["id"],
        tenant_id=row["tenant_id"],
        run_id=row["run_id"],
        tokens=row["tokens"],
        status=ReservationStatus(row["status"]),
        expires_at=row["expires_at"],
    )


def _affected(status: str) -> int:
    """Rows touched, from asyncpg's command tag (``UPDATE 3``, ``DELETE 0``)."""
    return int(status.rsplit(" ", 1)[-1])


class QuotaRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def set_plan_quota(self, plan_id: str, name: str, quota: int) -> None:
        await self._conn.execute(_UPSERT_PLAN_QUOTA, plan_id, name, quota)

    async def plan(self, plan_id: str) -> Plan | None:
        row = await self._conn.fetchrow(_GET_PLAN, plan_id)
        return _plan(row) if row else None

    async def plan_of(self, tenant_id: UUID, default_plan_id: str) -> Plan | None:
        row = await self._conn.fetchrow(_PLAN_OF_TENANT, tenant_id, default_plan_id)
        return _plan(row) if row else None

    async def assign_plan(self, tenant_id: UUID, plan_id: str) -> None:
        await self._conn.execute(_ASSIGN_PLAN, tenant_id, plan_id)

    async def lock_period(
        self, tenant_id: UUID, period_start: datetime, default_plan_id: str
    ) -> tuple[int, Plan]:
        """The tenant's tokens used in the period and its plan, with the period row locked until commit."""
        await self._conn.execute(_ENSURE_TENANT, tenant_id, default_plan_id)
        await self._conn.execute(_ENSURE_PERIOD, tenant_id, period_start)
        row = await self._conn.fetchrow(_LOCK_PERIOD, tenant_id, period_start)
        assert row is not None  # both rows were just ensured
        return row["used_tokens"], _plan(row)

    async def period_usage(self, tenant_id: UUID, period_start: datetime) -> tuple[int, int]:
        """``(used tokens, cost micros)`` of the tenant in the period."""
        row = await self._conn.fetchrow(_PERIOD_USAGE, tenant_id, period_start)
        return (row["used_tokens"], row["cost_micros"]) if row else (0, 0)

    async def add_period_usage(self, tenant_id: UUID, period_start: datetime, tokens: int, cost: int) -> None:
        await self._conn.execute(_ADD_PERIOD_USAGE, tenant_id, period_start, tokens, cost)

    async def active_reserved(self, tenant_id: UUID) -> int:
        total: int = await self._conn.fetchval(_ACTIVE_RESERVED, tenant_id)
        return total

    async def reservation(self, run_id: str) -> Reservation | None:
        row = await self._conn.fetchrow(_GET_RESERVATION, run_id)
        return _reservation(row) if row else None

    async def insert_reservation(
        self, tenant_id: UUID, run_id: str, tokens: int, ttl_s: float
    ) -> Reservation:
        return _reservation(await self._conn.fetchrow(_INSERT_RESERVATION, tenant_id, run_id, tokens, ttl_s))

    async def release(self, run_id: str) -> Reservation | None:
        row = await self._conn.fetchrow(_RELEASE, run_id)
        return _reservation(row) if row else None

    async def settle(self, run_id: str, tenant_id: UUID, tokens: int) -> bool:
        return _affected(await self._conn.execute(_SETTLE, run_id, tenant_id, tokens)) > 0

    async def expire_due(self, limit: int) -> int:
        return _affected(await self._conn.execute(_EXPIRE_DUE, limit))

    async def purge_processed(self, older_than_days: int, limit: int) -> int:
        return _affected(await self._conn.execute(_PURGE_PROCESSED, older_than_days, limit))
