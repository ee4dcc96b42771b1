"""Settings shared by every service (pydantic-settings; read from the environment).

``Settings()`` is built only in a service's ``__main__``; tests build it explicitly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["local", "test", "staging", "prod"]

# A development-only default: `prod` refuses to start with it (see PlatformSettings.check_production).
DEV_INTERNAL_SECRET = "coca-dev-internal-secret-change-me"  # noqa: S105


class PlatformSettings(BaseSettings):
    """What every service needs. Each service subclasses it and adds its own fields."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str
    # local | test | staging | prod. staging/prod refuse development defaults (secrets, keys).
    environment: Environment = "local"
    # DEBUG | INFO | WARNING | ERROR; logs are JSON lines on stdout.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Address the HTTP server binds (0.0.0.0 in containers).
    http_host: str = "127.0.0.1"
    # Port of the HTTP server (each service has its own default, from the architecture brief).
    http_port: int = 8080
    # Signs the identity headers the gateway sets for internal calls (HMAC-SHA256).
    internal_secret: SecretStr = SecretStr(DEV_INTERNAL_SECRET)
    # Largest request body any service accepts, in bytes (the gateway has its own limit too).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Seconds a readiness probe waits for each dependency.
    readiness_timeout_s: float = 2.0

    def check_production(self) -> None:
        """Refuse development defaults outside local/test. Called from ``__main__``."""
        if self.environment in ("staging", "prod") and (
            self.internal_secret.get_secret_value() == DEV_INTERNAL_SECRET
        ):
            raise SystemExit("INTERNAL_SECRET must be set outside local/test environments")


class DatabaseSettings(BaseSettings):
    """Mixin for services with a PostgreSQL schema."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # PostgreSQL DSN; each service uses its own schema (coca_<service>) in it.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/coca"
    # Connections kept open / at most, per process.
    db_pool_min: int = 1
    db_pool_max: int = 10


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Redis URL (rate limits, sessions, event logs, caches).
    redis_url: str = "redis://127.0.0.1:6379/0"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Kafka bootstrap servers (host:port, comma-separated).
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Consumer session timeout; librdkafka's default makes a new group wait ~24 s for its first fetch.
    kafka_session_timeout_ms: int = 6000


class AmqpSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # RabbitMQ URL.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
