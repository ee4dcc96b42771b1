"""SQL for model prices, usage records, the ledger and usage reports (asyncpg; schema ``coca_billing``).

Every read of usage filters by ``tenant_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

import asyncpg

from coca_billing.models import DEFAULT_PRICE_MODEL, GroupBy, Price, UsageEvent, UsageGroup

_PRICES = """
SELECT model, prompt_micros_per_1k, completion_micros_per_1k FROM model_prices
WHERE model = ANY($1::text[])
"""
_INSERT_USAGE = """
INSERT INTO usage_records (event_id, tenant_id, user_id, agent_id, run_id, model, prompt_tokens,
    completion_tokens, cost_micros, ledger_transaction_id, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (event_id) DO NOTHING
RETURNING 1
"""
_POST_LEDGER = """
INSERT INTO ledger_entries (transaction_id, tenant_id, account, amount_micros)
SELECT $1, $2, account, amount FROM unnest($3::text[], $4::bigint[]) AS entry(account, amount)
"""

# One statement per grouping (no SQL is assembled at run time). Half-open ranges [start, end).
_BY_DAY = """
SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS key,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(cost_micros)::bigint AS cost_micros
FROM usage_records WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
GROUP BY 1 ORDER BY 1 LIMIT $4
"""
_BY_MODEL = """
SELECT model AS key,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(cost_micros)::bigint AS cost_micros
FROM usage_records WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
GROUP BY 1 ORDER BY 1 LIMIT $4
"""
_BY_AGENT = """
SELECT agent_id AS key,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(cost_micros)::bigint AS cost_micros
FROM usage_records WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
GROUP BY 1 ORDER BY 1 NULLS LAST LIMIT $4
"""
_REPORTS = {GroupBy.DAY: _BY_DAY, GroupBy.MODEL: _BY_MODEL, GroupBy.AGENT: _BY_AGENT}


class UsageRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def prices(self, models: Iterable[str]) -> dict[str, Price]:
        """Prices of ``models`` that have a row, and the default row ``*`` when there is one."""
        rows = await self._conn.fetch(_PRICES, [*set(models), DEFAULT_PRICE_MODEL])
        return {r["model"]: Price(r["prompt_micros_per_1k"], r["completion_micros_per_1k"]) for r in rows}

    async def insert(self, event: UsageEvent, cost_micros: int, ledger_transaction_id: UUID | None) -> bool:
        """False when the event was recorded before (its id is the primary key)."""
        inserted = await self._conn.fetchval(
            _INSERT_USAGE,
            event.event_id,
            event.tenant_id,
            event.user_id,
            event.agent_id,
            event.run_id,
            event.model,
            event.prompt_tokens,
            event.completion_tokens,
            cost_micros,
            ledger_transaction_id,
            event.occurred_at,
        )
        return inserted is not None

    async def post_ledger(
        self, transaction_id: UUID, tenant_id: UUID, entries: list[tuple[str, int]]
    ) -> None:
        """Append one ledger transaction; it must balance by commit (the database refuses it otherwise)."""
        await self._conn.execute(
            _POST_LEDGER,
            transaction_id,
            tenant_id,
            [account for account, _ in entries],
            [amount for _, amount in entries],
        )

    async def report(
        self, tenant_id: UUID, start: datetime, end: datetime, group_by: GroupBy, limit: int
    ) -> list[UsageGroup]:
        rows = await self._conn.fetch(_REPORTS[group_by], tenant_id, start, end, limit)
        return [
            UsageGroup(r["key"], r["prompt_tokens"], r["completion_tokens"], r["cost_micros"]) for r in rows
        ]
