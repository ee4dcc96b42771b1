"""Use-case of usage reports: a tenant's tokens and cost over a time range, grouped by day, model or agent."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from coca_platform.db import Pool
from coca_platform.errors import InvalidArgument

from coca_billing.models import GroupBy, UsageReport
from coca_billing.usage_repository import UsageRepository

# Most groups one report returns (a year of days, or a tenant's models/agents).
MAX_GROUPS = 10_000


class UsageReports:
    def __init__(self, pool: Pool, *, max_range_days: int) -> None:
        self._pool = pool
        self._max_range = timedelta(days=max_range_days)

    async def report(self, tenant_id: UUID, start: datetime, end: datetime, group_by: GroupBy) -> UsageReport:
        """Usage that occurred in ``[start, end)`` (timezone-aware bounds)."""
        if start >= end:
            raise InvalidArgument("from must be before to", code="invalid_range")
        if end - start > self._max_range:
            raise InvalidArgument(
                f"a usage report covers at most {self._max_range.days} days", code="invalid_range"
            )
        async with self._pool.acquire() as conn:
            items = await UsageRepository(conn).report(tenant_id, start, end, group_by, MAX_GROUPS)
        return UsageReport(start, end, group_by, items)
