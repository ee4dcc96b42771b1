"""HTTP edge of the billing service: public usage and balance (tenant-scoped), and the internal quota API
for other services (signed identity with role ``system``; the gateway never forwards ``/internal``)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from uuid import UUID

from coca_platform import web
from coca_platform.errors import InvalidArgument
from coca_platform.identity import IdentityDep
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, StringConstraints

from coca_billing.models import Balance, Grant, GroupBy, Period, Reservation, UsageGroup, UsageReport
from coca_billing.resources import Resources

router = APIRouter()

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RunId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PlanId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


ResourcesDep = Annotated[Resources, Depends(web.state_resources)]


def _bound(value: str | None, name: str, *, is_end: bool) -> datetime | None:
    """A date (``YYYY-MM-DD``: a whole day, so ``to`` includes it) or an RFC 3339 timestamp; UTC if naive."""
    if value is None:
        return None
    value = value.strip()
    try:
        if _DATE_RE.match(value):
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if is_end else moment
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{name}: expected a date (YYYY-MM-DD) or an RFC 3339 timestamp, got {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ReserveRequest(BaseModel):
    tenant_id: UUID
    run_id: RunId
    estimated_tokens: int = Field(ge=1, le=10**12)


class ReservationOut(BaseModel):
    reservation_id: UUID
    tenant_id: UUID
    run_id: str
    tokens: int
    status: str
    expires_at: datetime
    remaining: int | None = None

    @classmethod
    def of(cls, reservation: Reservation, remaining: int | None = None) -> ReservationOut:
        return cls(
            reservation_id=reservation.id,
            tenant_id=reservation.tenant_id,
            run_id=reservation.run_id,
            tokens=reservation.tokens,
            status=reservation.status,
            expires_at=reservation.expires_at,
            remaining=remaining,
        )


class ReleaseRequest(BaseModel):
    run_id: RunId


class AssignPlanRequest(BaseModel):
    plan_id: PlanId


class TenantPlanOut(BaseModel):
    tenant_id: UUID
    plan_id: str
    name: str
    monthly_token_quota: int


class UsageItemOut(BaseModel):
    key: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int

    @classmethod
    def of(cls, group: UsageGroup) -> UsageItemOut:
        return cls(
            key=group.key,
            prompt_tokens=group.prompt_tokens,
            completion_tokens=group.completion_tokens,
            cost_micros=group.cost_micros,
        )


class UsageTotalsOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


class UsageOut(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    group_by: GroupBy
    items: list[UsageItemOut]
    totals: UsageTotalsOut

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        totals = report.totals
        return cls(
            from_=report.start,
            to=report.end,
            group_by=report.group_by,
            items=[UsageItemOut.of(g) for g in report.items],
            totals=UsageTotalsOut(
                prompt_tokens=totals.prompt_tokens,
                completion_tokens=totals.completion_tokens,
                cost_micros=totals.cost_micros,
            ),
        )


class BalanceOut(BaseModel):
    plan: str
    plan_name: str
    period_start: datetime
    period_end: datetime
    quota_tokens: int
    used_tokens: int
    reserved_tokens: int
    remaining_tokens: int
    cost_micros: int

    @classmethod
    def of(cls, balance: Balance) -> BalanceOut:
        return cls(
            plan=balance.plan.id,
            plan_name=balance.plan.name,
            period_start=balance.period.start,
            period_end=balance.period.end,
            quota_tokens=balance.plan.monthly_token_quota,
            used_tokens=balance.used_tokens,
            reserved_tokens=balance.reserved_tokens,
            remaining_tokens=balance.remaining_tokens,
            cost_micros=balance.cost_micros,
        )


@router.get("/v1/usage", response_model=UsageOut)
async def usage(
    identity: IdentityDep,
    res: ResourcesDep,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    group_by: Annotated[GroupBy, Query()] = GroupBy.DAY,
) -> UsageOut:
    """The tenant's usage in ``[from, to)``; by default from the start of this month until now."""
    tenant_id = identity.tenant_uuid()
    now = datetime.now(UTC)
    start = _bound(from_, "from", is_end=False) or Period.of(now).start
    end = _bound(to, "to", is_end=True) or now
    return UsageOut.of(await res.reports.report(tenant_id, start, end, group_by))


@router.get("/v1/billing/balance", response_model=BalanceOut)
async def balance(identity: IdentityDep, res: ResourcesDep) -> BalanceOut:
    return BalanceOut.of(await res.quota.balance(identity.tenant_uuid()))


@router.post("/internal/v1/quota:reserve", status_code=201, response_model=ReservationOut)
async def reserve(body: ReserveRequest, identity: IdentityDep, res: ResourcesDep) -> ReservationOut:
    """Before a run: hold its estimated tokens, or 402 ``quota_exceeded``."""
    identity.require_role("system")
    grant: Grant = await res.quota.reserve(body.tenant_id, body.run_id, body.estimated_tokens)
    return ReservationOut.of(grant.reservation, grant.remaining)


@router.post("/internal/v1/quota:release", response_model=ReservationOut)
async def release(body: ReleaseRequest, identity: IdentityDep, res: ResourcesDep) -> ReservationOut:
    """After a failed run: give its reservation back without charging (idempotent)."""
    identity.require_role("system")
    return ReservationOut.of(await res.quota.release(body.run_id))


@router.put("/internal/v1/tenants/{tenant_id}/plan", response_model=TenantPlanOut)
async def assign_plan(
    tenant_id: UUID, body: AssignPlanRequest, identity: IdentityDep, res: ResourcesDep
) -> TenantPlanOut:
    identity.require_role("system")
    plan = await res.quota.assign_plan(tenant_id, body.plan_id)
    return TenantPlanOut(
        tenant_id=tenant_id, plan_id=plan.id, name=plan.name, monthly_token_quota=plan.monthly_token_quota
    )
