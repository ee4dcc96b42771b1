"""The channel service's settings (environment variables, case-insensitive).

Tuples are given as JSON lists, e.g. ``OUTBOUND_BACKOFF_S='[1, 5, 30]'``.
"""

from __future__ import annotations

from coca_platform.crypto import SecretsSettings
from coca_platform.egress import EgressSettings
from coca_platform.settings import AmqpSettings, DatabaseSettings, PlatformSettings, RedisSettings
from pydantic import Field, SecretStr


class Settings(
    PlatformSettings, DatabaseSettings, RedisSettings, AmqpSettings, SecretsSettings, EgressSettings
):
    service_name: str = "channel"
    http_port: int = 8003

    # Where providers reach the gateway: a channel's inbound_url is <this>/v1/channels/{id}/inbound.
    public_base_url: str = "http://127.0.0.1:8080"

    # Largest distance (either way) between a signed inbound request's X-Coca-Timestamp and now, in s.
    signature_tolerance_s: int = Field(default=300, ge=1, le=3600)

    # Largest inbound webhook request body, in bytes (checked before MAX_BODY_BYTES).
    inbound_max_body_bytes: int = Field(default=65_536, ge=1024)

    # Longest inbound message text, in characters.
    inbound_max_text_chars: int = Field(default=16_000, ge=1)

    # Tries to send one reply to a channel's outbound URL, in all; then it goes to channel.outbound.dlq.
    outbound_max_attempts: int = Field(default=5, ge=1, le=100)

    # Seconds before each retry of a reply (JSON list; the last value repeats).
    outbound_backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)

    # Seconds one try to send a reply may take.
    outbound_timeout_s: float = Field(default=10.0, gt=0)

    # Bytes of a receiver's answer read (replies and push notifications); only its status matters.
    outbound_max_response_bytes: int = Field(default=65_536, ge=1024)

    # Tries per notification, in all: the brief's "3 retries, then the dead-letter queue" is 4.
    notification_max_attempts: int = Field(default=4, ge=1, le=100)

    # Seconds before each retry of a notification (JSON list; the last value repeats).
    notification_backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)

    # Seconds one push notification POST may take.
    push_timeout_s: float = Field(default=10.0, gt=0)

    # SMTP server for email notifications (aiosmtplib).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)

    # SMTP login; unset: no AUTH.
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None

    # The From header of email notifications.
    smtp_from: str = "Coca AI <noreply@localhost>"

    # Upgrade the SMTP connection with STARTTLS (required when true).
    smtp_starttls: bool = False

    # Seconds an SMTP exchange may take.
    smtp_timeout_s: float = Field(default=10.0, gt=0)

    # Messages each consumer (channel.outbound, notification.email, notification.push) handles at once.
    consumer_prefetch: int = Field(default=16, ge=1, le=1000)
