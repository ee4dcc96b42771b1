"""The billing service's settings (environment variables, case-insensitive)."""

from __future__ import annotations

from coca_platform.settings import DatabaseSettings, KafkaSettings, PlatformSettings
from pydantic import Field


class Settings(PlatformSettings, DatabaseSettings, KafkaSettings):
    service_name: str = "billing"
    http_port: int = 8005

    # Plan a tenant gets the first time it reserves tokens (a row of the plans table).
    default_plan_id: str = "free"
    # Monthly token quota of the `free` plan; written to the plans table when the service starts.
    free_plan_monthly_tokens: int = Field(default=1_000_000, ge=0)
    # Seconds a reservation holds tokens when the run's usage never arrives; then it expires.
    reservation_ttl_s: int = Field(default=900, ge=1, le=7 * 86_400)
    # Largest estimate one reservation may hold, in tokens.
    max_reservation_tokens: int = Field(default=1_000_000, ge=1)
    # How often expired reservations are marked and old dedupe rows purged, in seconds.
    sweep_interval_s: float = Field(default=30.0, gt=0)
    # Processed usage event ids are kept this many days (longer than the topic's retention).
    processed_events_retention_days: int = Field(default=35, ge=1)

    # Kafka topic of usage records, and this service's consumer group on it.
    usage_topic: str = "usage.records"
    usage_consumer_group: str = "billing"
    # Records handled in one PostgreSQL transaction.
    usage_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Run the usage consumer in this process (an API-only replica turns it off).
    usage_consumer_enabled: bool = True

    # Longest time range one `GET /v1/usage` may cover, in days.
    usage_max_range_days: int = Field(default=366, ge=1)
