"""Domain types of the billing service, and the arithmetic of periods and prices. No I/O here.

Money is integer micro-units of the currency (``*_micros``); token counts are integers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

USAGE_ACCOUNT = "tenant:{tenant_id}:usage"
REVENUE_ACCOUNT = "revenue:usage"
DEFAULT_PRICE_MODEL = "*"


class ReservationStatus(enum.StrEnum):
    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class GroupBy(enum.StrEnum):
    DAY = "day"
    MODEL = "model"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: one calendar month in UTC, ``[start, end)``."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, moment: datetime) -> Period:
        moment = moment.astimezone(UTC)
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if start.month == 12:
            return cls(start, start.replace(year=start.year + 1, month=1))
        return cls(start, start.replace(month=start.month + 1))


@dataclass(frozen=True, slots=True)
class Price:
    """What 1000 tokens cost, in micros, for prompts and for completions."""

    prompt_micros_per_1k: int
    completion_micros_per_1k: int

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact in milli-micros, then rounded half up to whole micros, once per record."""
        milli = prompt_tokens * self.prompt_micros_per_1k + completion_tokens * self.completion_micros_per_1k
        return (milli + 500) // 1000


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    monthly_token_quota: int


@dataclass(frozen=True, slots=True)
class Reservation:
    id: UUID
    tenant_id: UUID
    run_id: str
    tokens: int
    status: ReservationStatus
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Grant:
    """A reservation that was made (or found, for a repeated request), and the tokens left after it."""

    reservation: Reservation
    remaining: int


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One ``usage.recorded`` event, validated."""

    event_id: str
    tenant_id: UUID
    user_id: str | None
    agent_id: str | None
    run_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    occurred_at: datetime

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Balance:
    plan: Plan
    period: Period
    used_tokens: int
    reserved_tokens: int
    cost_micros: int

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.plan.monthly_token_quota - self.used_tokens - self.reserved_tokens)


@dataclass(frozen=True, slots=True)
class UsageGroup:
    key: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    start: datetime
    end: datetime
    group_by: GroupBy
    items: list[UsageGroup]

    @property
    def totals(self) -> UsageGroup:
        return UsageGroup(
            None,
            sum(i.prompt_tokens for i in self.items),
            sum(i.completion_tokens for i in self.items),
            sum(i.cost_micros for i in self.items),
        )
